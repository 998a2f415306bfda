//! TLS for the daemon's connections to the exchange, and PEM files: the simulator's
//! certificate and key, the daemon's extra roots.
//!
//! Errors say what is wrong with the file without quoting it: a key file's content is a
//! secret, and a certificate file's is noise in a log.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{Error as PemError, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The one client configuration of every connection to the exchange: REST (both of its
/// pools), the market streams, the user stream and the WebSocket API.
///
/// With no extra root it is what hyper-rustls's `with_webpki_roots` and
/// tokio-tungstenite's `rustls-tls-webpki-roots` build by default (tls.rs there): webpki's
/// roots, the process's default crypto provider and protocol versions, no client
/// certificate, no ALPN. Extra roots are trusted besides those, never instead.
pub fn client_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for (i, root) in extra_roots.iter().enumerate() {
        roots
            .add(root.clone())
            .map_err(|e| format!("certificate {}: not a usable root: {e}", i + 1))?;
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

fn pem_reason(e: &PemError) -> String {
    match e {
        PemError::Io(e) => format!("cannot read: {e}"),
        // The other variants may quote a line of the file (IllegalSectionStart does).
        PemError::MissingSectionEnd { .. } => "bad PEM: a section has no END line".into(),
        PemError::IllegalSectionStart { .. } => "bad PEM: malformed BEGIN line".into(),
        PemError::Base64Decode(_) => "bad PEM: invalid base64 in a section".into(),
        PemError::SectionTooLarge => "bad PEM: a section is too large".into(),
        PemError::NoItemsFound => "no PEM item of the expected kind".into(),
        _ => "bad PEM".into(),
    }
}

/// Every `CERTIFICATE` section of a PEM file, in file order; at least one.
pub fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_reason(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_reason(&e))?;
    if certs.is_empty() {
        return Err(
            "no certificate in it (a PEM \"BEGIN CERTIFICATE\" section is expected)".into(),
        );
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn pem_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        PemError::NoItemsFound => {
            "no private key in it (a PEM \"BEGIN PRIVATE KEY\" section is expected)".into()
        }
        e => pem_reason(&e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_client_config_is_webpki_without_alpn_and_roots_only_add() {
        let plain = client_config(&[]).unwrap();
        assert!(plain.alpn_protocols.is_empty());
        assert!(!plain.client_auth_cert_resolver.has_certs());
        assert_eq!(
            format!("{:?}", plain.crypto_provider()),
            format!("{:?}", rustls::ClientConfig::builder().crypto_provider())
        );
        // A DER that is no certificate is refused, naming its place in the file.
        let junk = CertificateDer::from(vec![1u8, 2, 3]);
        let e = client_config(&[junk]).unwrap_err();
        assert!(e.starts_with("certificate 1: not a usable root: "), "{e}");
    }

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";

    #[test]
    fn certificates_in_file_order_and_errors_without_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let two = dir.path().join("two.pem");
        std::fs::write(&two, format!("{CERT}{}", CERT.replace("AQID", "BAUG"))).unwrap();
        let certs = pem_certificates(&two).unwrap();
        assert_eq!(
            certs
                .iter()
                .map(|c| c.as_ref().to_vec())
                .collect::<Vec<_>>(),
            vec![vec![1, 2, 3], vec![4, 5, 6]]
        );

        let missing = dir.path().join("missing.pem");
        let e = pem_certificates(&missing).unwrap_err();
        assert!(e.starts_with("cannot read: "), "{e}");

        let key_only = dir.path().join("key.pem");
        std::fs::write(
            &key_only,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert_eq!(
            pem_certificates(&key_only).unwrap_err(),
            "no certificate in it (a PEM \"BEGIN CERTIFICATE\" section is expected)"
        );
        assert_eq!(
            pem_private_key(&two).unwrap_err(),
            "no private key in it (a PEM \"BEGIN PRIVATE KEY\" section is expected)"
        );

        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nAQID\n").unwrap();
        assert_eq!(
            pem_certificates(&broken).unwrap_err(),
            "bad PEM: a section has no END line"
        );
        let garbled = dir.path().join("garbled.pem");
        std::fs::write(
            &garbled,
            "-----BEGIN CERTIFICATE-----\nc2Vj!!cmV0\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = pem_certificates(&garbled).unwrap_err();
        assert_eq!(e, "bad PEM: invalid base64 in a section");
        assert!(!e.contains("c2Vj"));
    }
}
