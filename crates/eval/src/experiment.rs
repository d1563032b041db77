//! Experiments: run a target over every example of a dataset, score each output with the evaluators, and record
//! every result in the trace store.
//!
//! The target is a *task*: any `Fn(Value) -> Future<Output = Result<(Value, Option<Usage>)>>`, given an example's
//! input and returning the output (with the tokens it used, when known). Two ready-made tasks cover the usual
//! targets:
//!
//! - [`llm_task`]: a model (the studio's "rerun these inputs through a model"): the input becomes chat messages
//!   ([`input_messages`]), the output is the answer message as a recorded run stores it, with its usage;
//! - [`chain_task`]: any [`Chain`] whose input deserialises from the example's input and whose output
//!   serialises (a `RagChain`, an `LlmChain`, a chain of your own).
//!
//! Any other closure works too, such as a call into your application.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use catena_core::futures::future::BoxFuture;
use catena_core::futures::{FutureExt, StreamExt};
use catena_core::{Chain, ChatRequest, Error, Llm, Result, Usage};
use catena_trace::{Example, Experiment, ExperimentId, ExperimentResult, Score, TokenUsage, TraceStore};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::evaluators::Evaluator;
use crate::text::{answer_value, input_messages};

/// What a task returns for one input: the output, and the tokens it used when known.
pub type TaskOutput = (Value, Option<Usage>);

/// The future of a ready-made task.
pub type TaskFuture = BoxFuture<'static, Result<TaskOutput>>;

/// Runs `task` over every example of `dataset` in the trace store file `db`, as the experiment `name` of
/// `target` (a model such as `openai/gpt-4o`, or a chain's label: shown in the studio), at most `concurrency`
/// examples at once; scores every output with every evaluator; records each result as it completes; marks the
/// experiment finished; and returns it with its summary.
///
/// A failing example never stops the run: a task that errs (or panics) is recorded with its error and no
/// scores, and an evaluator that errs (or panics) is recorded as a failed score ([`Score::failed`]). The store is
/// opened from its path so that the returned future is `Send` (it can be spawned), and the store is written only
/// between awaits.
///
/// # Errors
/// [`Error::InvalidInput`] when there is no such dataset; [`Error::Store`] when the store cannot be opened or
/// written (the results recorded so far stay, and the experiment stays unfinished).
pub async fn run_experiment<F, Fut>(
    db: impl AsRef<Path>,
    dataset: &str,
    name: &str,
    target: &str,
    task: F,
    evaluators: &[Box<dyn Evaluator>],
    concurrency: usize,
) -> Result<Experiment>
where
    F: Fn(Value) -> Fut + Send + Sync,
    Fut: Future<Output = Result<TaskOutput>> + Send,
{
    let store = TraceStore::open(db.as_ref())?;
    let id = store.start_experiment(dataset, name, target)?;
    let examples = store.examples(dataset)?;
    tracing::info!(experiment = id.0, dataset, name, target, examples = examples.len(), "experiment started");
    let task = &task;
    let mut results = futures_stream(examples, move |example| run_one(id, example, task, evaluators), concurrency);
    while let Some(result) = results.next().await {
        store.record_result(&result)?;
    }
    store.finish_experiment(id)?;
    let detail = store.experiment(id)?.ok_or_else(|| Error::Store {
        store: format!("trace store {}", store.path().display()),
        message: format!("experiment {id} vanished while it ran"),
    })?;
    Ok(detail.experiment)
}

fn futures_stream<'a, T: Send + 'a>(
    examples: Vec<Example>,
    f: impl FnMut(Example) -> BoxFuture<'a, T> + Send + 'a,
    concurrency: usize,
) -> catena_core::futures::stream::BoxStream<'a, T> {
    catena_core::futures::stream::iter(examples).map(f).buffer_unordered(concurrency.max(1)).boxed()
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

fn run_one<'a, F, Fut>(
    experiment: ExperimentId,
    example: Example,
    task: &'a F,
    evaluators: &'a [Box<dyn Evaluator>],
) -> BoxFuture<'a, ExperimentResult>
where
    F: Fn(Value) -> Fut + Send + Sync,
    Fut: Future<Output = Result<TaskOutput>> + Send,
{
    async move {
        let started = Instant::now();
        let outcome = AssertUnwindSafe(async { task(example.input.clone()).await }).catch_unwind().await;
        let latency = started.elapsed();
        let (output, usage) = match outcome {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return failed(experiment, &example, e.to_string(), latency),
            Err(panic) => {
                return failed(experiment, &example, format!("the task panicked: {}", panic_message(&*panic)), latency)
            }
        };
        let reference = example.reference.as_ref();
        let scores = catena_core::futures::future::join_all(evaluators.iter().map(|evaluator| {
            let output = &output;
            let input = &example.input;
            async move {
                let graded = AssertUnwindSafe(evaluator.evaluate(input, output, reference)).catch_unwind().await;
                match graded {
                    Ok(Ok(score)) => score,
                    Ok(Err(e)) => Score::failed(evaluator.name(), e.to_string()),
                    Err(panic) => {
                        Score::failed(evaluator.name(), format!("the evaluator panicked: {}", panic_message(&*panic)))
                    }
                }
            }
        }))
        .await;
        ExperimentResult {
            experiment,
            example: example.id,
            output: Some(output),
            error: None,
            latency,
            usage: usage.map(token_usage),
            scores,
        }
    }
    .boxed()
}

fn failed(
    experiment: ExperimentId,
    example: &Example,
    error: String,
    latency: std::time::Duration,
) -> ExperimentResult {
    tracing::warn!(experiment = experiment.0, example = example.id.0, %error, "an example failed");
    ExperimentResult {
        experiment,
        example: example.id,
        output: None,
        error: Some(error),
        latency,
        usage: None,
        scores: Vec::new(),
    }
}

fn token_usage(usage: Usage) -> TokenUsage {
    TokenUsage { input: usage.input_tokens, output: usage.output_tokens, cached_input: usage.cached_input_tokens }
}

/// A task that sends each input to `llm`: `request`'s messages (a system prompt, say) followed by the input's
/// messages ([`input_messages`]), with `request`'s settings (model, temperature, max tokens, ...). The output is
/// the answer message as a recorded run stores it (`[{"role": "assistant", ...}]`), with the usage.
///
/// ```no_run
/// # use std::sync::Arc;
/// # async fn demo(llm: Arc<dyn catena_core::Llm>, db: &std::path::Path) -> catena_core::Result<()> {
/// use catena_core::{ChatRequest, Message};
/// use catena_eval::{llm_task, run_experiment, Evaluator, ExactMatch};
/// let task = llm_task(llm, ChatRequest::new(vec![Message::system("Answer in one word.")]).with_temperature(0.0));
/// let evaluators: Vec<Box<dyn Evaluator>> = vec![Box::new(ExactMatch::new().case_insensitive(true))];
/// let experiment = run_experiment(db, "capitals", "one word", "openai/gpt-4o-mini", task, &evaluators, 4).await?;
/// # Ok(()) }
/// ```
pub fn llm_task(llm: Arc<dyn Llm>, request: ChatRequest) -> impl Fn(Value) -> TaskFuture + Send + Sync + Clone {
    move |input: Value| {
        let llm = Arc::clone(&llm);
        let mut request = request.clone();
        async move {
            request.messages.extend(input_messages(&input)?);
            let response = llm.chat(request).await?;
            Ok((answer_value(&response.message), response.usage))
        }
        .boxed()
    }
}

/// A task that runs `chain` on each input, deserialised into the chain's input type (a `String` for a prompt,
/// `Vec<Message>` for a conversation, your own struct); the output is the chain's output serialised. A chain
/// reports no usage of its own, so the results have none (its model calls' tokens are in the recorded runs when
/// tracing is on); [`chain_task_with_usage`] reads it from an output that carries it.
///
/// # Errors (of the task)
/// [`Error::InvalidInput`] when an input does not deserialise into the chain's input; the chain's errors.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> catena_core::Result<()> {
/// use catena_core::{chain_fn, Chain};
/// use catena_eval::chain_task;
/// let shout = chain_fn(|s: String| async move { Ok::<_, catena_core::Error>(s.to_uppercase()) });
/// let task = chain_task(shout);
/// let (output, usage) = task(serde_json::json!("hi")).await?;
/// assert_eq!((output, usage), (serde_json::json!("HI"), None));
/// # Ok(()) }
/// ```
pub fn chain_task<C>(chain: C) -> impl Fn(Value) -> TaskFuture + Send + Sync + Clone
where
    C: Chain,
    C::Input: DeserializeOwned,
    C::Output: Serialize,
{
    chain_task_with_usage(chain, |_: &C::Output| None)
}

/// [`chain_task`] for a chain whose output carries the tokens it used: `usage` reads them from the output (for a
/// `RagChain`, `|answer: &Answer| answer.usage`), so the experiment's results and totals count them.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> catena_core::Result<()> {
/// use catena_core::{chain_fn, Usage};
/// use catena_eval::chain_task_with_usage;
/// #[derive(serde::Serialize)]
/// struct Reply { text: String, tokens: u64 }
/// let reply = chain_fn(|s: String| async move { Ok::<_, catena_core::Error>(Reply { tokens: s.len() as u64, text: s }) });
/// let task = chain_task_with_usage(reply, |r: &Reply| Some(Usage { output_tokens: r.tokens, ..Usage::default() }));
/// let (output, usage) = task(serde_json::json!("hi")).await?;
/// assert_eq!(output["text"], "hi");
/// assert_eq!(usage.map(|u| u.output_tokens), Some(2));
/// # Ok(()) }
/// ```
pub fn chain_task_with_usage<C, U>(chain: C, usage: U) -> impl Fn(Value) -> TaskFuture + Send + Sync + Clone
where
    C: Chain,
    C::Input: DeserializeOwned,
    C::Output: Serialize,
    U: Fn(&C::Output) -> Option<Usage> + Send + Sync + 'static,
{
    let chain = Arc::new(chain);
    let usage = Arc::new(usage);
    move |input: Value| {
        let chain = Arc::clone(&chain);
        let usage = Arc::clone(&usage);
        async move {
            let input: C::Input = serde_json::from_value(input.clone()).map_err(|e| {
                Error::InvalidInput(format!(
                    "the example input {} does not fit the chain's input {}: {e}",
                    crate::evaluators::preview(&input.to_string(), 200),
                    std::any::type_name::<C::Input>()
                ))
            })?;
            let output = chain.invoke(input).await?;
            let used = usage(&output);
            Ok((serde_json::to_value(output)?, used))
        }
        .boxed()
    }
}
