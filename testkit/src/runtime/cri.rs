//! A gRPC channel to a CRI runtime's unix socket.

use std::path::Path;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// Connects a tonic channel to the CRI runtime listening on the unix socket `socket`, for
/// `k8s_cri::v1::runtime_service_client::RuntimeServiceClient::new(channel)` and its image twin.
pub async fn cri_channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    // The URI is a placeholder: the connector below ignores it and dials the socket.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(socket)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await
}
