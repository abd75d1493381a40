//! Certificates for TLS tests, made with openssl in a test's directory: CAs,
//! and certificates they sign (servers for localhost/127.0.0.1, clients).
//! Used by `tls` (Redis over TLS) and `api_tls` (the API over HTTPS).

use std::path::Path;
use std::process::Command;

/// Whether openssl is there to make certificates with.
pub fn openssl_available() -> bool {
    Command::new("openssl").arg("version").output().is_ok()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA: `<name>.crt` and `<name>.key` in `dir`.
pub fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
        ],
    );
}

/// A server certificate for localhost/127.0.0.1 signed by `ca`:
/// `server.crt` and `server.key`.
pub fn make_server_cert(dir: &Path, ca: &str) {
    make_cert(
        dir,
        ca,
        "server",
        "localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        2,
    );
}

/// A client certificate signed by `ca`: `<name>.crt` and `<name>.key`.
pub fn make_client_cert(dir: &Path, ca: &str, name: &str) {
    make_cert(dir, ca, name, name, "extendedKeyUsage=clientAuth\n", 2);
}

/// A certificate for `cn` valid for `days`, with the extensions `ext`
/// (openssl's -extfile syntax), signed by `ca`: `<name>.crt` and `<name>.key`.
pub fn make_cert(dir: &Path, ca: &str, name: &str, cn: &str, ext: &str, days: u32) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    let ext_file = format!("{name}.ext.cnf");
    std::fs::write(dir.join(&ext_file), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            &days.to_string(),
            "-extfile",
            &ext_file,
        ],
    );
}
