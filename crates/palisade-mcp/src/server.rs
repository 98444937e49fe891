//! [`Guarded`]: any rmcp server, with every tool call under its tool's policy.

#![allow(deprecated)] // `subscribe`/`unsubscribe` are legacy, but a wrapper still forwards them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};

use palisade_dlq::{Failure, FailureKind};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams,
    CancelledNotificationParam, CompleteRequestParams, CompleteResult, CustomNotification,
    CustomRequest, CustomResult, DiscoverResult, ErrorCode, GetPromptRequestParams,
    GetPromptResponse, GetSkillRequestParams, GetSkillResult, GetTaskParams, GetTaskResult,
    InitializeRequestParams, InitializeResult, JsonObject, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListSkillsResult, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ProtocolVersion,
    ReadResourceDirectoryRequestParams, ReadResourceDirectoryResult, ReadResourceRequestParams,
    ReadResourceResponse, ServerConfig, SetLevelRequestParams, SubscribeRequestParams,
    SubscriptionFilter, Tool, UnsubscribeRequestParams, UpdateTaskParams,
};
use rmcp::service::{MaybeSendFuture, NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::Value;

use crate::caller::Caller;
use crate::deadletter::{DeadCall, Replay, keep};
use crate::guard::{CallError, Outcome, Verdict, invoke_classified};
use crate::policies::ToolPolicies;
use crate::policy::ToolPolicy;
use crate::refusal::Refusal;
use crate::replay::{IDEMPOTENCY_META, idempotency_key};

/// Says how a tool result counts for the tool's breaker; see [`Guarded::classify`].
pub type ResultClassifier = Arc<dyn Fn(&CallToolResult) -> Verdict + Send + Sync>;

/// Finds who made a request; see [`Guarded::caller`].
pub type CallerOf = Arc<dyn Fn(&RequestContext<RoleServer>) -> Caller + Send + Sync>;

/// Most pages of `tools/list` read when Guarded lists the inner server's tools itself.
const MAX_LIST_PAGES: usize = 100;

/// Any rmcp [`ServerHandler`], with every tool call under its tool's [`ToolPolicy`]. Every
/// other request goes to the inner server untouched.
///
/// A `tools/call` passes, in order, the tool's rate limits (keyed by the [`Caller`]: its
/// identity when authentication middleware put one into the request, else its address), its
/// circuit breaker, its bulkhead, and its timeout; then the inner server's answer is
/// classified once:
///
/// | the inner server | breaker | the client gets |
/// | --- | --- | --- |
/// | a result (even `isError: true`) | success, unless [`classify`](Self::classify) says otherwise | the result |
/// | `Err` with `INVALID_PARAMS` or `METHOD_NOT_FOUND` | ignored | the same error |
/// | any other `Err` | failure | a tool error `upstream_failed`, dead-lettered under the replay policy |
/// | no answer within the timeout | failure | `upstream_failed` (kind `timeout`) with a dead-letter queue, else `timed_out` |
///
/// Refusals are tool results with `isError: true` (`rate_limited`, `breaker_open`,
/// `partition_full`; see [`Refusal::to_result`]), never protocol errors.
///
/// A tool's replay policy, when its [`ToolPolicy`] sets none, follows the annotations of the
/// tool as the inner server lists it ([`ServerHandler::get_tool`], else its `tools/list`,
/// read once at the first call that needs it and again whenever a client lists tools). A call
/// that may be queued carries an idempotency key from its first attempt on: the client's, if
/// its `_meta` has [`IDEMPOTENCY_META`], else a fresh one put there for the inner server.
///
/// Clones share the policies: build it once and hand a clone to each MCP session.
///
/// ```
/// use std::time::Duration;
/// use palisade_mcp::{Guarded, ToolPolicy};
/// # #[derive(Clone)] struct Docs;
/// # impl rmcp::ServerHandler for Docs {}
///
/// let server = Guarded::new(Docs)
///     .tool("search", ToolPolicy::builder().timeout(Duration::from_secs(5)).build())
///     .default_policy(ToolPolicy::builder().timeout(Duration::from_secs(30)).build());
/// assert_eq!(server.tool_policies().get("search").unwrap().timeout(), Some(Duration::from_secs(5)));
/// ```
pub struct Guarded<S> {
    inner: S,
    shared: Arc<Shared>,
}

#[derive(Clone, Default)]
struct Shared {
    policies: ToolPolicies,
    classify: Option<ResultClassifier>,
    caller_of: Option<CallerOf>,
    /// The inner server's tools by name, once listed (shared by every clone).
    listed: Arc<RwLock<Option<HashMap<String, Tool>>>>,
}

impl<S: Clone> Clone for Guarded<S> {
    fn clone(&self) -> Self {
        Guarded {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> fmt::Debug for Guarded<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("policies", &self.shared.policies)
            .field("classify", &self.shared.classify.is_some())
            .field("caller", &self.shared.caller_of.is_some())
            .finish_non_exhaustive()
    }
}

impl<S> Guarded<S> {
    /// `inner` with no policies yet: every tool gets the default policy, which guards nothing.
    pub fn new(inner: S) -> Guarded<S> {
        Guarded {
            inner,
            shared: Arc::default(),
        }
    }

    fn shared_mut(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.shared)
    }

    /// Sets `tool`'s policy.
    #[must_use]
    pub fn tool(mut self, tool: impl Into<String>, policy: ToolPolicy) -> Self {
        self.shared_mut().policies.insert(tool, policy);
        self
    }

    /// Sets the policy of every tool without its own.
    #[must_use]
    pub fn default_policy(mut self, policy: ToolPolicy) -> Self {
        let shared = self.shared_mut();
        shared.policies = std::mem::take(&mut shared.policies).default_policy(policy);
        self
    }

    /// Replaces every policy (from a config: [`ToolPoliciesConfig::build`](crate::ToolPoliciesConfig::build)).
    #[must_use]
    pub fn policies(mut self, policies: ToolPolicies) -> Self {
        self.shared_mut().policies = policies;
        self
    }

    /// Counts tool results as `classify` says. Default: every result is a success, even one
    /// with `isError: true` (the tool ran and answered; its input or its own domain failed).
    ///
    /// ```
    /// use palisade_mcp::{Guarded, Verdict};
    /// # #[derive(Clone)] struct Docs;
    /// # impl rmcp::ServerHandler for Docs {}
    ///
    /// // This server reports its backend's outages as tool errors with `"error": "unavailable"`.
    /// let server = Guarded::new(Docs).classify(|result| {
    ///     let outage = result.is_error == Some(true)
    ///         && result.structured_content.as_ref().is_some_and(|v| v["error"] == "unavailable");
    ///     if outage { Verdict::Failure } else { Verdict::Success }
    /// });
    /// ```
    #[must_use]
    pub fn classify(
        mut self,
        classify: impl Fn(&CallToolResult) -> Verdict + Send + Sync + 'static,
    ) -> Self {
        self.shared_mut().classify = Some(Arc::new(classify));
        self
    }

    /// Finds the caller of a request with `caller_of` instead of [`Caller::from_context`]
    /// (behind a trusted proxy, say, from `X-Forwarded-For`). Called only for tools whose
    /// policy needs it (rate limits, dead letters).
    #[must_use]
    pub fn caller(
        mut self,
        caller_of: impl Fn(&RequestContext<RoleServer>) -> Caller + Send + Sync + 'static,
    ) -> Self {
        self.shared_mut().caller_of = Some(Arc::new(caller_of));
        self
    }

    /// The tool policies.
    pub fn tool_policies(&self) -> &ToolPolicies {
        &self.shared.policies
    }

    /// The inner server.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The inner server, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Keeps the annotations of `tools` (a page of the inner server's listing).
    fn remember(&self, tools: &[Tool]) {
        let mut listed = self
            .shared
            .listed
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let map = listed.get_or_insert_with(HashMap::new);
        for tool in tools {
            map.insert(tool.name.to_string(), tool.clone());
        }
    }

    fn listed_tool(&self, name: &str) -> Option<Option<Tool>> {
        let listed = self
            .shared
            .listed
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        listed.as_ref().map(|map| map.get(name).cloned())
    }
}

impl<S: ServerHandler> Guarded<S> {
    /// The tool as the inner server lists it: its `get_tool`, else its listing (read once,
    /// then kept up to date by the `tools/list` requests that pass through).
    async fn find_tool(&self, name: &str, context: &RequestContext<RoleServer>) -> Option<Tool> {
        if let Some(tool) = self.inner.get_tool(name) {
            return Some(tool);
        }
        if let Some(known) = self.listed_tool(name) {
            return known;
        }
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let request = cursor.map(|c| PaginatedRequestParams::default().with_cursor(Some(c)));
            match self.inner.list_tools(request, context.clone()).await {
                Ok(page) => {
                    self.remember(&page.tools);
                    pages += 1;
                    match page.next_cursor {
                        Some(next) if pages < MAX_LIST_PAGES => cursor = Some(next),
                        _ => break,
                    }
                }
                Err(e) => {
                    tracing::debug!(target: crate::guard::TARGET, error = %e, "could not list the inner server's tools");
                    self.remember(&[]);
                    break;
                }
            }
        }
        self.listed_tool(name).flatten()
    }

    async fn policy_of(&self, tool: &str, context: &RequestContext<RoleServer>) -> Arc<ToolPolicy> {
        let policies = &self.shared.policies;
        if let Some(policy) = policies.lookup(tool) {
            return policy;
        }
        if !policies.makes_per_tool() {
            return Arc::clone(policies.fallback());
        }
        let listed = self.find_tool(tool, context).await;
        policies.resolve(tool, listed.as_ref())
    }

    fn caller_of(&self, context: &RequestContext<RoleServer>) -> Caller {
        match &self.shared.caller_of {
            Some(caller_of) => caller_of(context),
            None => Caller::from_context(context),
        }
    }

    async fn guarded_call(
        &self,
        request: CallToolRequestParams,
        mut context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let tool: Cow<'static, str> = request.name.clone();
        let policy = self.policy_of(&tool, &context).await;
        let caller = policy.needs_caller().then(|| self.caller_of(&context));
        if let Some(caller) = &caller
            && let Err(refusal) = policy.check_rate(&tool, caller).await
        {
            return Ok(refusal.to_result(&tool).into());
        }
        // A call that may be dead-lettered carries an idempotency key from its first attempt.
        let mut plan = None;
        if policy.dead_letter().is_some() {
            let (replay, source) = match policy.replay() {
                Some(_) => policy.replay_for(None),
                None => {
                    let listed = self.find_tool(&tool, &context).await;
                    policy.replay_for(listed.as_ref().and_then(|t| t.annotations.as_ref()))
                }
            };
            let key = replay.queues().then(|| {
                let given = context.meta.get(IDEMPOTENCY_META).and_then(Value::as_str);
                match given {
                    Some(key) => key.to_owned(),
                    None => {
                        let key = idempotency_key();
                        context
                            .meta
                            .insert(IDEMPOTENCY_META.to_owned(), Value::from(key.clone()));
                        key
                    }
                }
            });
            let arguments = match &key {
                Some(_) => request.arguments.clone().unwrap_or_default(),
                None => JsonObject::new(),
            };
            plan = Some((replay, source, key, arguments));
        }

        let mut rejection = None;
        let outcome = {
            let rejection = &mut rejection;
            let tool = &*tool;
            let inner = &self.inner;
            let classify = |response: &CallToolResponse| match (response, &self.shared.classify) {
                (CallToolResponse::Complete(result), Some(classify)) => classify(result),
                _ => Verdict::Success,
            };
            invoke_classified(&policy, tool, classify, move || async move {
                match inner.call_tool(request, context).await {
                    Ok(response) => Ok(response),
                    Err(e)
                        if e.code == ErrorCode::INVALID_PARAMS
                            || e.code == ErrorCode::METHOD_NOT_FOUND =>
                    {
                        let message = e.message.to_string();
                        *rejection = Some(e);
                        Err(CallError::Rejected(message))
                    }
                    Err(e) => Err(CallError::Failed(Failure::server_error(format!(
                        "{tool}: the server answered error {}: {}",
                        e.code.0, e.message
                    )))),
                }
            })
            .await
        };
        let failure = match outcome {
            Outcome::Done(response) => return Ok(response),
            Outcome::Rejected(message) => {
                return Err(rejection.unwrap_or_else(|| McpError::invalid_params(message, None)));
            }
            Outcome::Refused(refusal) => return Ok(refusal.to_result(&tool).into()),
            Outcome::Lost(failure) => {
                return Ok(Outcome::Lost(failure).into_result_unqueued(&tool).into());
            }
            Outcome::Failed(failure) => failure,
        };
        let (Some((policy_replay, source, key, arguments)), Some(dlq)) =
            (plan, policy.dead_letter())
        else {
            if failure.kind == FailureKind::Timeout
                && let Some(after) = policy.timeout()
            {
                return Ok(Refusal::TimedOut { after }.to_result(&tool).into());
            }
            return Ok(Outcome::Failed(failure).into_result_unqueued(&tool).into());
        };
        let call = DeadCall {
            tool: tool.to_string(),
            arguments,
            client: caller.map(|c| c.address).unwrap_or_default(),
            idempotency_key: key,
        };
        let replay = Replay {
            policy: policy_replay,
            source,
            idempotency_key: call.idempotency_key.as_deref(),
        };
        let result = Outcome::Failed(failure)
            .into_result(&tool, replay, |letter| keep(dlq, &tool, &call, letter))
            .await;
        Ok(result.into())
    }

    async fn listing(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let page = self.inner.list_tools(request, context).await?;
        self.remember(&page.tools);
        Ok(page)
    }
}

impl<S: ServerHandler> ServerHandler for Guarded<S> {
    fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<CallToolResponse, McpError>> + MaybeSendFuture + '_ {
        self.guarded_call(request, context)
    }

    fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ListToolsResult, McpError>> + MaybeSendFuture + '_ {
        self.listing(request, context)
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.inner.get_tool(name)
    }

    fn ping(
        &self,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<(), McpError>> + MaybeSendFuture + '_ {
        self.inner.ping(context)
    }

    fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<InitializeResult, McpError>> + MaybeSendFuture + '_ {
        self.inner.initialize(request, context)
    }

    fn negotiate_initialize(
        &self,
        request: &InitializeRequestParams,
    ) -> Result<InitializeResult, McpError> {
        self.inner.negotiate_initialize(request)
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        self.inner.supported_protocol_versions()
    }

    fn discover(
        &self,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<DiscoverResult, McpError>> + MaybeSendFuture + '_ {
        self.inner.discover(context)
    }

    fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<CompleteResult, McpError>> + MaybeSendFuture + '_ {
        self.inner.complete(request, context)
    }

    fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<(), McpError>> + MaybeSendFuture + '_ {
        self.inner.set_level(request, context)
    }

    fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<GetPromptResponse, McpError>> + MaybeSendFuture + '_ {
        self.inner.get_prompt(request, context)
    }

    fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ListPromptsResult, McpError>> + MaybeSendFuture + '_ {
        self.inner.list_prompts(request, context)
    }

    fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ListResourcesResult, McpError>> + MaybeSendFuture + '_ {
        self.inner.list_resources(request, context)
    }

    fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ListResourceTemplatesResult, McpError>> + MaybeSendFuture + '_
    {
        self.inner.list_resource_templates(request, context)
    }

    fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ReadResourceResponse, McpError>> + MaybeSendFuture + '_ {
        self.inner.read_resource(request, context)
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        self.inner.accepted_subscription_filter(requested)
    }

    fn listen(
        &self,
        context: SubscriptionContext,
    ) -> impl Future<Output = Result<(), McpError>> + MaybeSendFuture + '_ {
        self.inner.listen(context)
    }

    fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<(), McpError>> + MaybeSendFuture + '_ {
        self.inner.subscribe(request, context)
    }

    fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<(), McpError>> + MaybeSendFuture + '_ {
        self.inner.unsubscribe(request, context)
    }

    fn on_custom_request(
        &self,
        request: CustomRequest,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<CustomResult, McpError>> + MaybeSendFuture + '_ {
        self.inner.on_custom_request(request, context)
    }

    fn on_cancelled(
        &self,
        notification: CancelledNotificationParam,
        context: NotificationContext<RoleServer>,
    ) -> impl Future<Output = ()> + MaybeSendFuture + '_ {
        self.inner.on_cancelled(notification, context)
    }

    fn on_progress(
        &self,
        notification: ProgressNotificationParam,
        context: NotificationContext<RoleServer>,
    ) -> impl Future<Output = ()> + MaybeSendFuture + '_ {
        self.inner.on_progress(notification, context)
    }

    fn on_initialized(
        &self,
        context: NotificationContext<RoleServer>,
    ) -> impl Future<Output = ()> + MaybeSendFuture + '_ {
        self.inner.on_initialized(context)
    }

    fn on_roots_list_changed(
        &self,
        context: NotificationContext<RoleServer>,
    ) -> impl Future<Output = ()> + MaybeSendFuture + '_ {
        self.inner.on_roots_list_changed(context)
    }

    fn on_custom_notification(
        &self,
        notification: CustomNotification,
        context: NotificationContext<RoleServer>,
    ) -> impl Future<Output = ()> + MaybeSendFuture + '_ {
        self.inner.on_custom_notification(notification, context)
    }

    fn get_info(&self) -> ServerConfig {
        self.inner.get_info()
    }

    fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<GetTaskResult, McpError>> + MaybeSendFuture + '_ {
        self.inner.get_task(request, context)
    }

    fn update_task(
        &self,
        request: UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<(), McpError>> + MaybeSendFuture + '_ {
        self.inner.update_task(request, context)
    }

    fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<(), McpError>> + MaybeSendFuture + '_ {
        self.inner.cancel_task(request, context)
    }

    fn list_skills(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ListSkillsResult, McpError>> + MaybeSendFuture + '_ {
        self.inner.list_skills(request, context)
    }

    fn get_skill(
        &self,
        request: GetSkillRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<GetSkillResult, McpError>> + MaybeSendFuture + '_ {
        self.inner.get_skill(request, context)
    }

    fn read_resource_directory(
        &self,
        request: ReadResourceDirectoryRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ReadResourceDirectoryResult, McpError>> + MaybeSendFuture + '_
    {
        self.inner.read_resource_directory(request, context)
    }
}
