//! Typed, composable chains: the [`Chain`] trait and its combinators.
//!
//! A chain maps a typed `Input` to a typed `Output` (`invoke`), many inputs at once (`batch`), or streams
//! typed `Chunk`s (`stream`). Chains compose with [`Chain::then`], [`Chain::map`], [`parallel`],
//! [`Chain::with_retry`] and [`Chain::with_fallback`]; an async closure becomes a chain with [`chain_fn`].
//!
//! Streaming flows through composition: in `a.then(b)`, `a` runs to completion and `b` streams, so the last
//! streaming step streams the whole chain. A step that cannot stream (a closure, a `map`) emits its whole output
//! as one chunk and says so through [`Chain::streams_incrementally`].
//!
//! Every step runs inside a `tracing` span (`gen_ai.operation.name = "chain"`, `catena.chain.step`,
//! `catena.latency_ms`); there are no callbacks.
//!
//! ```
//! use catena_core::{chain_fn, Chain, Error};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
//! let parse = chain_fn(|s: String| async move { s.trim().parse::<i64>().map_err(Error::chain) });
//! let double = parse.then(chain_fn(|n: i64| async move { Ok(n * 2) })).map(|n| format!("= {n}"));
//! assert_eq!(double.invoke(" 21 ".to_string()).await?, "= 42");
//! let all = double.batch(vec!["1".into(), "x".into(), "3".into()], 2).await;
//! assert!(all[1].is_err());
//! assert_eq!(all[2].as_ref().unwrap(), "= 6");
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::{Stream, StreamExt, TryStreamExt};

use crate::error::{Error, Result};

/// A stream of chain chunks. It owns what it needs (`'static`): it can be returned from a function (an axum
/// handler), moved into `tokio::spawn`, and outlive the chain value it came from.
pub type ChainStream<T> = Pin<Box<dyn Stream<Item = Result<T>> + Send + 'static>>;

/// A shared, type-erased chain.
pub type BoxChain<I, O, C = O> = Arc<dyn Chain<Input = I, Output = O, Chunk = C>>;

/// Wraps a future's result as a one-chunk stream: what a step that cannot stream incrementally returns.
pub fn stream_once<T, F>(fut: F) -> ChainStream<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    Box::pin(futures::stream::once(fut))
}

/// A typed step of work. Chains are cheap-to-clone handles (their state sits behind `Arc`s), so a stream can
/// own what it needs.
#[async_trait]
pub trait Chain: Send + Sync + 'static {
    /// What the chain takes.
    type Input: Send + 'static;
    /// What the chain returns.
    type Output: Send + 'static;
    /// What the chain streams (text deltas for a model step; the whole output for most other steps).
    type Chunk: Send + 'static;

    /// Runs the chain on one input.
    async fn invoke(&self, input: Self::Input) -> Result<Self::Output>;

    /// Runs the chain and streams its output in chunks. The stream is `'static`: it does not borrow the chain.
    fn stream(&self, input: Self::Input) -> ChainStream<Self::Chunk>;

    /// Whether `stream` yields incremental chunks (`true`) or the whole output at once (`false`).
    fn streams_incrementally(&self) -> bool {
        false
    }

    /// Runs the chain on many inputs, at most `max_concurrency` at once, returning one result per input in input
    /// order. One failing input does not fail the others.
    async fn batch(&self, inputs: Vec<Self::Input>, max_concurrency: usize) -> Vec<Result<Self::Output>> {
        futures::stream::iter(inputs.into_iter().map(|i| self.invoke(i)))
            .buffered(max_concurrency.max(1))
            .collect()
            .await
    }

    /// Feeds this chain's output into `next`.
    fn then<N>(self, next: N) -> Then<Self, N>
    where
        Self: Sized,
        N: Chain<Input = Self::Output>,
    {
        Then { first: Arc::new(self), second: Arc::new(next) }
    }

    /// Transforms the output with a plain function. In a stream, `f` sees the whole output (one chunk).
    fn map<O, F>(self, f: F) -> Map<Self, F>
    where
        Self: Sized,
        F: Fn(Self::Output) -> O + Send + Sync,
        O: Send + 'static,
    {
        Map { inner: Arc::new(self), f: Arc::new(f) }
    }

    /// Transforms each streamed chunk (and, on `invoke`, the output) with `f`, keeping the stream incremental.
    fn map_chunks<F>(self, f: F) -> MapChunks<Self, F>
    where
        Self: Sized + Chain<Chunk = <Self as Chain>::Output>,
        F: Fn(Self::Output) -> Self::Output + Send + Sync,
    {
        MapChunks { inner: Arc::new(self), f: Arc::new(f) }
    }

    /// Retries failed invocations that are retryable ([`Error::is_retryable`]) with exponential backoff and
    /// jitter, honouring a server's `Retry-After`.
    fn with_retry(self, policy: RetryPolicy) -> Retry<Self>
    where
        Self: Sized,
        Self::Input: Clone,
    {
        Retry { inner: Arc::new(self), policy }
    }

    /// Runs `fallback` when this chain fails.
    fn with_fallback<F>(self, fallback: F) -> Fallback<Self, F>
    where
        Self: Sized,
        Self::Input: Clone,
        F: Chain<Input = Self::Input, Output = Self::Output, Chunk = Self::Chunk>,
    {
        Fallback { primary: Arc::new(self), fallback: Arc::new(fallback) }
    }

    /// Names this step in traces.
    fn named(self, name: impl Into<String>) -> Named<Self>
    where
        Self: Sized,
    {
        Named { inner: self, name: name.into() }
    }

    /// Erases the chain's type so chains of different types can be stored together.
    fn boxed(self) -> BoxChain<Self::Input, Self::Output, Self::Chunk>
    where
        Self: Sized + 'static,
    {
        Arc::new(self)
    }
}

// Written without `#[async_trait]` so a call through an `Arc` returns the inner chain's boxed future as it is
// instead of boxing it a second time.
impl<C: Chain + ?Sized> Chain for Arc<C> {
    type Input = C::Input;
    type Output = C::Output;
    type Chunk = C::Chunk;
    fn invoke<'life0, 'async_trait>(
        &'life0 self,
        input: Self::Input,
    ) -> Pin<Box<dyn Future<Output = Result<Self::Output>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        (**self).invoke(input)
    }
    fn stream(&self, input: Self::Input) -> ChainStream<Self::Chunk> {
        (**self).stream(input)
    }
    fn streams_incrementally(&self) -> bool {
        (**self).streams_incrementally()
    }
}

fn step_span(step: &str) -> tracing::Span {
    tracing::info_span!(
        "chain",
        gen_ai.operation.name = "chain",
        catena.chain.step = step,
        catena.latency_ms = tracing::field::Empty,
    )
}

/// Runs `fut` inside `span` and records its latency on it. When no subscriber wants the span, the clock is not
/// read at all (a disabled span costs nothing else either).
async fn timed<T>(span: tracing::Span, fut: impl Future<Output = Result<T>>) -> Result<T> {
    if span.is_disabled() {
        let out = fut.await;
        if let Err(e) = &out {
            tracing::warn!(error = %e.with_causes(), "chain step failed");
        }
        return out;
    }
    let start = Instant::now();
    let mut fut = std::pin::pin!(fut);
    let out = std::future::poll_fn(|cx| {
        let _entered = span.enter();
        fut.as_mut().poll(cx)
    })
    .await;
    span.record("catena.latency_ms", start.elapsed().as_secs_f64() * 1e3);
    if let Err(e) = &out {
        let _entered = span.enter();
        tracing::warn!(error = %e.with_causes(), "chain step failed");
    }
    out
}

/// An async closure as a chain. Build it with [`chain_fn`].
pub struct FnChain<F, I, O> {
    f: Arc<F>,
    name: &'static str,
    _types: PhantomData<fn(I) -> O>,
}

impl<F, I, O> std::fmt::Debug for FnChain<F, I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FnChain({})", self.name)
    }
}

impl<F, I, O> Clone for FnChain<F, I, O> {
    fn clone(&self) -> Self {
        FnChain { f: self.f.clone(), name: self.name, _types: PhantomData }
    }
}

/// Makes a chain from an async closure `|input| async move { ... Ok(output) }`.
///
/// ```
/// use catena_core::{chain_fn, Chain};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let shout = chain_fn(|s: String| async move { Ok(s.to_uppercase()) });
/// assert_eq!(shout.invoke("hi".into()).await.unwrap(), "HI");
/// # }
/// ```
pub fn chain_fn<F, Fut, I, O>(f: F) -> FnChain<F, I, O>
where
    F: Fn(I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O>> + Send + 'static,
    I: Send + 'static,
    O: Send + 'static,
{
    FnChain { f: Arc::new(f), name: "fn", _types: PhantomData }
}

#[async_trait]
impl<F, Fut, I, O> Chain for FnChain<F, I, O>
where
    F: Fn(I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O>> + Send + 'static,
    I: Send + 'static,
    O: Send + 'static,
{
    type Input = I;
    type Output = O;
    type Chunk = O;
    async fn invoke(&self, input: I) -> Result<O> {
        timed(step_span(self.name), (self.f)(input)).await
    }
    fn stream(&self, input: I) -> ChainStream<O> {
        let fut = timed(step_span(self.name), (self.f)(input));
        stream_once(fut)
    }
}

/// `first` then `second`. Built by [`Chain::then`].
#[derive(Debug)]
pub struct Then<A, B> {
    first: Arc<A>,
    second: Arc<B>,
}

impl<A, B> Clone for Then<A, B> {
    fn clone(&self) -> Self {
        Then { first: self.first.clone(), second: self.second.clone() }
    }
}

#[async_trait]
impl<A, B> Chain for Then<A, B>
where
    A: Chain,
    B: Chain<Input = A::Output>,
{
    type Input = A::Input;
    type Output = B::Output;
    type Chunk = B::Chunk;
    async fn invoke(&self, input: A::Input) -> Result<B::Output> {
        let mid = self.first.invoke(input).await?;
        self.second.invoke(mid).await
    }
    fn stream(&self, input: A::Input) -> ChainStream<B::Chunk> {
        let (first, second) = (self.first.clone(), self.second.clone());
        let mid = async move { first.invoke(input).await };
        Box::pin(futures::stream::once(mid).map_ok(move |mid| second.stream(mid)).try_flatten())
    }
    fn streams_incrementally(&self) -> bool {
        self.second.streams_incrementally()
    }
}

/// The output transformed by a function. Built by [`Chain::map`].
#[derive(Debug)]
pub struct Map<C, F> {
    inner: Arc<C>,
    f: Arc<F>,
}

impl<C, F> Clone for Map<C, F> {
    fn clone(&self) -> Self {
        Map { inner: self.inner.clone(), f: self.f.clone() }
    }
}

#[async_trait]
impl<C, F, O> Chain for Map<C, F>
where
    C: Chain,
    F: Fn(C::Output) -> O + Send + Sync + 'static,
    O: Send + 'static,
{
    type Input = C::Input;
    type Output = O;
    type Chunk = O;
    async fn invoke(&self, input: C::Input) -> Result<O> {
        let out = self.inner.invoke(input).await?;
        let span = step_span("map");
        let _enter = span.enter();
        Ok((self.f)(out))
    }
    fn stream(&self, input: C::Input) -> ChainStream<O> {
        let this = self.clone();
        stream_once(async move { this.invoke(input).await })
    }
}

/// Each chunk transformed by a function. Built by [`Chain::map_chunks`].
#[derive(Debug)]
pub struct MapChunks<C, F> {
    inner: Arc<C>,
    f: Arc<F>,
}

impl<C, F> Clone for MapChunks<C, F> {
    fn clone(&self) -> Self {
        MapChunks { inner: self.inner.clone(), f: self.f.clone() }
    }
}

#[async_trait]
impl<C, F> Chain for MapChunks<C, F>
where
    C: Chain<Chunk = <C as Chain>::Output>,
    F: Fn(C::Output) -> C::Output + Send + Sync + 'static,
{
    type Input = C::Input;
    type Output = C::Output;
    type Chunk = C::Output;
    async fn invoke(&self, input: C::Input) -> Result<C::Output> {
        Ok((self.f)(self.inner.invoke(input).await?))
    }
    fn stream(&self, input: C::Input) -> ChainStream<C::Output> {
        let f = self.f.clone();
        Box::pin(self.inner.stream(input).map_ok(move |c| f(c)))
    }
    fn streams_incrementally(&self) -> bool {
        self.inner.streams_incrementally()
    }
}

/// A step with a name in traces. Built by [`Chain::named`].
#[derive(Debug, Clone)]
pub struct Named<C> {
    inner: C,
    name: String,
}

#[async_trait]
impl<C: Chain> Chain for Named<C> {
    type Input = C::Input;
    type Output = C::Output;
    type Chunk = C::Chunk;
    async fn invoke(&self, input: C::Input) -> Result<C::Output> {
        timed(step_span(&self.name), self.inner.invoke(input)).await
    }
    fn stream(&self, input: C::Input) -> ChainStream<C::Chunk> {
        let span = step_span(&self.name);
        let mut inner = self.inner.stream(input);
        Box::pin(futures::stream::poll_fn(move |cx| {
            let _entered = span.enter();
            inner.as_mut().poll_next(cx)
        }))
    }
    fn streams_incrementally(&self) -> bool {
        self.inner.streams_incrementally()
    }
}

pub use crate::layer::RetryPolicy;

/// Retries a chain. Built by [`Chain::with_retry`].
#[derive(Debug)]
pub struct Retry<C> {
    inner: Arc<C>,
    policy: RetryPolicy,
}

impl<C> Clone for Retry<C> {
    fn clone(&self) -> Self {
        Retry { inner: self.inner.clone(), policy: self.policy.clone() }
    }
}

#[async_trait]
impl<C> Chain for Retry<C>
where
    C: Chain,
    C::Input: Clone,
{
    type Input = C::Input;
    type Output = C::Output;
    type Chunk = C::Chunk;
    async fn invoke(&self, input: C::Input) -> Result<C::Output> {
        let mut attempt = 1;
        loop {
            match self.inner.invoke(input.clone()).await {
                Ok(out) => return Ok(out),
                Err(e) => match self.policy.decide(attempt, &e) {
                    crate::layer::RetryDecision::RetryAfter(delay) => {
                        tracing::warn!(attempt, delay_ms = delay.as_millis() as u64, error = %e, "retrying chain step");
                        tokio::time::sleep(delay).await;
                        attempt += 1;
                    }
                    crate::layer::RetryDecision::GiveUp if attempt > 1 => {
                        return Err(Error::Exhausted { attempts: attempt as usize, last: Box::new(e) })
                    }
                    crate::layer::RetryDecision::GiveUp => return Err(e),
                },
            }
        }
    }
    /// Retries only while no chunk has been produced: once output has reached the caller, an error is passed on.
    fn stream(&self, input: C::Input) -> ChainStream<C::Chunk> {
        let this = self.clone();
        let start = async move {
            let mut attempt = 1;
            loop {
                let mut s = this.inner.stream(input.clone());
                match s.next().await {
                    Some(Err(e)) => match this.policy.decide(attempt, &e) {
                        crate::layer::RetryDecision::RetryAfter(delay) => {
                            tracing::warn!(attempt, error = %e, "retrying chain stream");
                            tokio::time::sleep(delay).await;
                            attempt += 1;
                        }
                        crate::layer::RetryDecision::GiveUp => {
                            return Ok::<_, Error>(futures::stream::iter(Some(Err(e))).chain(s));
                        }
                    },
                    first => {
                        let head = futures::stream::iter(first);
                        return Ok::<_, Error>(head.chain(s));
                    }
                }
            }
        };
        Box::pin(futures::stream::once(start).try_flatten())
    }
    fn streams_incrementally(&self) -> bool {
        self.inner.streams_incrementally()
    }
}

/// A chain with a fallback. Built by [`Chain::with_fallback`].
#[derive(Debug)]
pub struct Fallback<P, F> {
    primary: Arc<P>,
    fallback: Arc<F>,
}

impl<P, F> Clone for Fallback<P, F> {
    fn clone(&self) -> Self {
        Fallback { primary: self.primary.clone(), fallback: self.fallback.clone() }
    }
}

#[async_trait]
impl<P, F> Chain for Fallback<P, F>
where
    P: Chain,
    P::Input: Clone,
    F: Chain<Input = P::Input, Output = P::Output, Chunk = P::Chunk>,
{
    type Input = P::Input;
    type Output = P::Output;
    type Chunk = P::Chunk;
    async fn invoke(&self, input: P::Input) -> Result<P::Output> {
        match self.primary.invoke(input.clone()).await {
            Ok(out) => Ok(out),
            Err(e) => {
                tracing::warn!(error = %e, "primary chain failed; using fallback");
                self.fallback.invoke(input).await
            }
        }
    }
    /// Falls back only when the primary fails before its first chunk.
    fn stream(&self, input: P::Input) -> ChainStream<P::Chunk> {
        let this = self.clone();
        let start = async move {
            let mut s = this.primary.stream(input.clone());
            match s.next().await {
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "primary chain stream failed; using fallback");
                    Ok::<_, Error>(this.fallback.stream(input))
                }
                first => Ok(Box::pin(futures::stream::iter(first).chain(s)) as ChainStream<P::Chunk>),
            }
        };
        Box::pin(futures::stream::once(start).try_flatten())
    }
    fn streams_incrementally(&self) -> bool {
        self.primary.streams_incrementally()
    }
}

/// Runs several chains on (a clone of) the same input concurrently. Build it with [`parallel`] from a tuple of
/// chains (output: a tuple) or with [`parallel_map`] from named chains (output: a map).
#[derive(Debug)]
pub struct Parallel<T> {
    branches: Arc<T>,
}

impl<T> Clone for Parallel<T> {
    fn clone(&self) -> Self {
        Parallel { branches: self.branches.clone() }
    }
}

/// Fans one input out to a tuple of 2 to 4 chains, run concurrently; the output is the tuple of their outputs.
///
/// ```
/// use catena_core::{chain_fn, parallel, Chain};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let both = parallel((
///     chain_fn(|s: String| async move { Ok(s.len()) }),
///     chain_fn(|s: String| async move { Ok(s.to_uppercase()) }),
/// ));
/// assert_eq!(both.invoke("abc".into()).await.unwrap(), (3, "ABC".to_string()));
/// # }
/// ```
pub fn parallel<T>(branches: T) -> Parallel<T> {
    Parallel { branches: Arc::new(branches) }
}

macro_rules! parallel_tuple {
    ($($c:ident $o:ident $idx:tt),+) => {
        #[async_trait]
        impl<I, $($c),+> Chain for Parallel<($($c,)+)>
        where
            I: Clone + Send + Sync + 'static,
            $($c: Chain<Input = I>,)+
        {
            type Input = I;
            type Output = ($($c::Output,)+);
            type Chunk = ($($c::Output,)+);
            async fn invoke(&self, input: I) -> Result<Self::Output> {
                futures::try_join!($(self.branches.$idx.invoke(input.clone())),+)
            }
            fn stream(&self, input: I) -> ChainStream<Self::Chunk> {
                let this = self.clone();
                stream_once(async move { this.invoke(input).await })
            }
        }
    };
}
parallel_tuple!(A a 0, B b 1);
parallel_tuple!(A a 0, B b 1, C c 2);
parallel_tuple!(A a 0, B b 1, C c 2, D d 3);

/// Named chains of one type run concurrently on the same input. Built by [`parallel_map`].
pub struct ParallelMap<I, O, C> {
    branches: Arc<BTreeMap<String, BoxChain<I, O, C>>>,
}

impl<I, O, C> Clone for ParallelMap<I, O, C> {
    fn clone(&self) -> Self {
        ParallelMap { branches: self.branches.clone() }
    }
}

impl<I, O, C> std::fmt::Debug for ParallelMap<I, O, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParallelMap").field("branches", &self.branches.keys().collect::<Vec<_>>()).finish()
    }
}

/// Fans one input out to named chains, run concurrently; the output maps each name to its chain's output.
pub fn parallel_map<I, O, C>(branches: impl IntoIterator<Item = (String, BoxChain<I, O, C>)>) -> ParallelMap<I, O, C> {
    ParallelMap { branches: Arc::new(branches.into_iter().collect()) }
}

#[async_trait]
impl<I, O, C> Chain for ParallelMap<I, O, C>
where
    I: Clone + Send + Sync + 'static,
    O: Send + 'static,
    C: Send + 'static,
{
    type Input = I;
    type Output = BTreeMap<String, O>;
    type Chunk = BTreeMap<String, O>;
    async fn invoke(&self, input: I) -> Result<Self::Output> {
        let futs = self.branches.iter().map(|(name, chain)| {
            let input = input.clone();
            async move { chain.invoke(input).await.map(|o| (name.clone(), o)) }
        });
        Ok(futures::future::try_join_all(futs).await?.into_iter().collect())
    }
    fn stream(&self, input: I) -> ChainStream<Self::Chunk> {
        let this = self.clone();
        stream_once(async move { this.invoke(input).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A chain that streams its input string as one chunk per character: a real incremental stream.
    struct Chars;

    #[async_trait]
    impl Chain for Chars {
        type Input = String;
        type Output = String;
        type Chunk = String;
        async fn invoke(&self, input: String) -> Result<String> {
            Ok(input)
        }
        fn stream(&self, input: String) -> ChainStream<String> {
            Box::pin(futures::stream::iter(input.chars().map(|c| Ok(c.to_string())).collect::<Vec<_>>()))
        }
        fn streams_incrementally(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn streaming_flows_through_then() {
        let c =
            chain_fn(|n: u32| async move { Ok("ab".repeat(n as usize)) }).then(Chars).map_chunks(|s| s.to_uppercase());
        assert!(c.streams_incrementally());
        let chunks: Vec<String> = c.stream(2).try_collect().await.unwrap();
        assert_eq!(chunks, vec!["A", "B", "A", "B"]);
        assert_eq!(c.invoke(1).await.unwrap(), "AB");
    }

    #[tokio::test]
    async fn map_buffers_and_says_so() {
        let c = Chars.map(|s| s.len());
        assert!(!c.streams_incrementally());
        let chunks: Vec<usize> = c.stream("abc".into()).try_collect().await.unwrap();
        assert_eq!(chunks, vec![3]);
    }

    #[tokio::test]
    async fn batch_keeps_order_and_bounds_concurrency() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (r, p) = (running.clone(), peak.clone());
        let c = chain_fn(move |n: u64| {
            let (r, p) = (r.clone(), p.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30 - n * 2)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                if n == 3 {
                    Err(Error::InvalidInput("three".into()))
                } else {
                    Ok(n * 10)
                }
            }
        });
        let out = c.batch((0..10).collect(), 3).await;
        assert_eq!(out.len(), 10);
        assert!(out[3].is_err());
        assert_eq!(*out[9].as_ref().unwrap(), 90);
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn retry_only_retryable_errors() {
        let calls = Arc::new(AtomicUsize::new(0));
        let k = calls.clone();
        let flaky = chain_fn(move |_: ()| {
            let k = k.clone();
            async move {
                if k.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(Error::Http { provider: "t".into(), status: 503, body: String::new(), retry_after: None })
                } else {
                    Ok("ok")
                }
            }
        })
        .with_retry(
            RetryPolicy::new(5)
                .unwrap()
                .with_backoff(Duration::from_millis(1), Duration::from_millis(10), 2.0)
                .unwrap(),
        );
        assert_eq!(flaky.invoke(()).await.unwrap(), "ok");
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let calls = Arc::new(AtomicUsize::new(0));
        let k = calls.clone();
        let fatal = chain_fn(move |_: ()| {
            let k = k.clone();
            async move {
                k.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Error::Http { provider: "t".into(), status: 400, body: "bad".into(), retry_after: None })
            }
        })
        .with_retry(
            RetryPolicy::new(5)
                .unwrap()
                .with_backoff(Duration::from_millis(1), Duration::from_millis(10), 2.0)
                .unwrap(),
        );
        assert!(matches!(fatal.invoke(()).await, Err(Error::Http { status: 400, .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn fallback_and_parallel() {
        let failing = chain_fn(|_: String| async move { Err::<String, _>(Error::InvalidInput("no".into())) });
        let backup = chain_fn(|s: String| async move { Ok(format!("backup {s}")) });
        let c = failing.with_fallback(backup);
        assert_eq!(c.invoke("x".into()).await.unwrap(), "backup x");
        let streamed: Vec<String> = c.stream("y".into()).try_collect().await.unwrap();
        assert_eq!(streamed, vec!["backup y"]);

        let len = chain_fn(|s: String| async move { Ok(s.len()) }).boxed();
        let words = chain_fn(|s: String| async move { Ok(s.split(' ').count()) }).boxed();
        let m = parallel_map([("len".to_string(), len), ("words".to_string(), words)]);
        let out = m.invoke("a b c".into()).await.unwrap();
        assert_eq!(out["len"], 5);
        assert_eq!(out["words"], 3);
        let t = parallel((Chars, chain_fn(|s: String| async move { Ok(s.len()) }), Chars.map(|s| s + "!")));
        assert_eq!(t.invoke("hi".into()).await.unwrap(), ("hi".to_string(), 2, "hi!".to_string()));
    }
}
