//! rmcp's streamable-HTTP client with its connections kept alive between calls.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};
use sse_stream::Sse;
use tokio_stream::Stream;

type SseStream = Pin<Box<dyn Stream<Item = Result<Sse, SseError>> + Send>>;

/// How long the rest of a dropped response stream is read before the connection is given up.
const DRAIN_TIME: Duration = Duration::from_secs(1);
/// How many more events a dropped response stream may carry before the connection is given up.
const DRAIN_EVENTS: usize = 16;

/// An rmcp streamable-HTTP client whose TCP connections are reused from call to call.
///
/// rmcp's own client turns connection pooling off: its transport drops a response stream as
/// soon as the JSON-RPC response arrives, before the stream's end, and a connection whose body
/// was not read to the end cannot go back to the pool. So every call opens (and closes) a TCP
/// connection, which a browser or the TypeScript SDK does not do. This client keeps the pool
/// and, when a response stream is dropped unfinished, reads what is left of it (the server
/// ends it right after the response) in the background, bounded by time and event count, so
/// the connection returns to the pool. Redirects are not followed.
#[derive(Debug, Clone)]
pub struct KeepAliveClient {
    inner: reqwest::Client,
}

impl KeepAliveClient {
    /// A client with its own connection pool.
    pub fn new() -> Result<KeepAliveClient, reqwest::Error> {
        let inner = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .build()?;
        Ok(KeepAliveClient { inner })
    }
}

/// A response stream that, dropped before its end, reads the rest in the background.
struct Draining(Option<SseStream>);

impl Stream for Draining {
    type Item = Result<Sse, SseError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(stream) = self.0.as_mut() else {
            return Poll::Ready(None);
        };
        let next = stream.as_mut().poll_next(cx);
        if let Poll::Ready(None) = next {
            self.0 = None; // read to the end: nothing left to drain
        }
        next
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        let Some(mut rest) = self.0.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let _ = tokio::time::timeout(DRAIN_TIME, async move {
                for _ in 0..DRAIN_EVENTS {
                    if poll_fn(|cx| rest.as_mut().poll_next(cx)).await.is_none() {
                        return;
                    }
                }
            })
            .await;
        });
    }
}

fn draining(response: StreamableHttpPostResponse) -> StreamableHttpPostResponse {
    match response {
        StreamableHttpPostResponse::Sse(stream, session) => {
            StreamableHttpPostResponse::Sse(Box::pin(Draining(Some(stream))), session)
        }
        other => other,
    }
}

type PostResult = Result<StreamableHttpPostResponse, StreamableHttpError<reqwest::Error>>;

impl StreamableHttpClient for KeepAliveClient {
    type Error = reqwest::Error;

    fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> impl Future<Output = PostResult> + Send + '_ {
        self.post_message_with_response_limits(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            StreamableHttpResponseLimits::default(),
        )
    }

    fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> impl Future<Output = PostResult> + Send + '_ {
        let mut limits = StreamableHttpResponseLimits::default();
        limits.max_sse_event_size = max_sse_event_size;
        self.post_message_with_response_limits(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            limits,
        )
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> PostResult {
        self.inner
            .post_message_with_response_limits(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                limits,
            )
            .await
            .map(draining)
    }

    fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> impl Future<Output = Result<(), StreamableHttpError<Self::Error>>> + Send + '_ {
        self.inner
            .delete_session(uri, session_id, auth_header, custom_headers)
    }

    fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> impl Future<Output = Result<SseStream, StreamableHttpError<Self::Error>>> + Send + '_ {
        self.inner
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
    }

    fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> impl Future<Output = Result<SseStream, StreamableHttpError<Self::Error>>> + Send + '_ {
        self.inner.get_stream_with_max_sse_event_size(
            uri,
            session_id,
            last_event_id,
            auth_header,
            custom_headers,
            max_sse_event_size,
        )
    }
}
