//! TLS (rustls) and mutual TLS, with certificates made for the test.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use simgate::config::TlsConfig;
use simgate::pb;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::helpers::*;

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca_pem: ca.pem(),
        server: leaf("localhost"),
        client: leaf("client"),
    }
}

async fn tls_server(
    pki: &Pki,
    mutual: bool,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let tls = TlsConfig {
        cert_path: write("server.pem", &pki.server.0),
        key_path: write("server.key", &pki.server.1),
        client_ca_path: mutual.then(|| write("ca.pem", &pki.ca_pem)),
    };
    let app = simgate::Server::builder()
        .database_url(format!(
            "sqlite://{}",
            dir.path().join("simgate.db").display()
        ))
        .clock(Arc::new(simgate::clock::ManualClock::new(start_time())))
        .bootstrap_key(ADMIN_KEY)
        .tls(tls)
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.serve(listener, async {
        let _ = rx.await;
    }));
    (addr, tx, dir)
}

async fn list(channel: Channel) -> Result<(), tonic::Status> {
    cards_client(&channel, ADMIN_KEY)
        .list_cards(pb::ListCardsRequest::default())
        .await
        .map(|_| ())
}

fn client_tls(pki: &Pki) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost")
}

#[tokio::test]
async fn tls_serves_clients_that_trust_the_ca_and_refuses_plaintext() {
    let pki = pki();
    let (addr, _stop, _dir) = tls_server(&pki, false).await;
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(client_tls(&pki))
        .unwrap()
        .connect()
        .await
        .unwrap();
    list(channel).await.unwrap();

    let plain = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await;
    match plain {
        Err(_) => {}
        Ok(ch) => assert!(list(ch).await.is_err(), "plaintext must not be served"),
    }
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_from_the_ca() {
    let pki = pki();
    let (addr, _stop, _dir) = tls_server(&pki, true).await;
    let without = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(client_tls(&pki))
        .unwrap()
        .connect()
        .await;
    match without {
        Err(_) => {}
        Ok(ch) => assert!(list(ch).await.is_err(), "no client certificate: refused"),
    }
    let with = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(client_tls(&pki).identity(Identity::from_pem(&pki.client.0, &pki.client.1)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    list(with).await.unwrap();
}
