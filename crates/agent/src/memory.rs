//! Conversation memory: what part of a long conversation is sent to the model.
//!
//! [`TokenWindow`] keeps the system messages and the newest turns that fit a token budget, dropping the oldest
//! turns whole: an assistant message that called tools stays together with the results of those calls, so the
//! model never sees a result without its call or a call without its result. [`SummaryWindow`] does the same and
//! puts a model-written summary of the dropped turns in their place.

use std::sync::{Arc, Mutex, PoisonError};

use catena_core::{async_trait, ChatRequest, Error, Llm, Message, Result, Role};

/// Counts the tokens of a text, for a budget. Implemented for any `Fn(&str) -> usize`, so a real tokenizer plugs
/// in as a closure (for example `catena_text::count_tokens` with the model's encoding, or a `tokenizers`
/// tokenizer loaded from the model's folder).
pub trait TokenCounter: Send + Sync {
    /// The number of tokens of `text`.
    fn count(&self, text: &str) -> usize;
}

impl<F: Fn(&str) -> usize + Send + Sync> TokenCounter for F {
    fn count(&self, text: &str) -> usize {
        self(text)
    }
}

/// Decides which messages of a conversation go to the model. The agent calls it before each model call; the run
/// keeps the whole transcript.
#[async_trait]
pub trait Memory: Send + Sync {
    /// The messages to send for `conversation`.
    async fn fit(&self, conversation: &[Message]) -> Result<Vec<Message>>;
}

/// Keeps the system messages and the newest whole turns within a token budget.
///
/// ```
/// use catena_agent::{Memory, TokenWindow};
/// use catena_core::Message;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> catena_core::Result<()> {
/// // One token per word, four tokens of overhead per message.
/// let words = |t: &str| t.split_whitespace().count();
/// let memory = TokenWindow::new(30, 4, std::sync::Arc::new(words));
/// let conversation = vec![
///     Message::system("Be brief."),
///     Message::user("one two three four five six seven eight nine ten"),
///     Message::assistant("eleven twelve thirteen fourteen fifteen"),
///     Message::user("What next?"),
/// ];
/// let sent = memory.fit(&conversation).await?;
/// assert_eq!(sent, vec![conversation[0].clone(), conversation[3].clone()]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TokenWindow {
    budget: usize,
    per_message: usize,
    counter: Arc<dyn TokenCounter>,
}

impl std::fmt::Debug for TokenWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenWindow").field("budget", &self.budget).field("per_message", &self.per_message).finish()
    }
}

impl TokenWindow {
    /// At most `budget` tokens as `counter` counts them, with `per_message` tokens added for each message (the
    /// chat template's framing: about 4 for OpenAI models).
    pub fn new(budget: usize, per_message: usize, counter: Arc<dyn TokenCounter>) -> Self {
        TokenWindow { budget, per_message, counter }
    }

    /// The tokens `message` costs: its text, its tool calls' names and arguments, and the per-message framing.
    pub fn cost(&self, message: &Message) -> usize {
        let calls: usize =
            message.tool_calls.iter().map(|c| self.counter.count(&c.name) + self.counter.count(&c.arguments)).sum();
        self.per_message + self.counter.count(&message.text()) + calls
    }

    /// The split of `conversation`: the system messages, the dropped turns and the kept turns (both oldest
    /// first), or an error when the system messages and the newest turn alone exceed the budget.
    fn split(&self, conversation: &[Message]) -> Result<(Vec<Message>, Vec<Message>, Vec<Message>)> {
        let system: Vec<Message> = conversation.iter().filter(|m| m.role == Role::System).cloned().collect();
        let turns = turns(conversation.iter().filter(|m| m.role != Role::System).cloned().collect());
        let fixed: usize = system.iter().map(|m| self.cost(m)).sum();
        let mut used = fixed;
        let mut keep_from = turns.len();
        for (i, turn) in turns.iter().enumerate().rev() {
            let cost: usize = turn.iter().map(|m| self.cost(m)).sum();
            if used + cost > self.budget {
                break;
            }
            used += cost;
            keep_from = i;
        }
        if keep_from == turns.len() && !turns.is_empty() {
            let newest: usize = turns[turns.len() - 1].iter().map(|m| self.cost(m)).sum();
            return Err(Error::InvalidInput(format!(
                "the system messages ({fixed} tokens) and the newest message ({newest} tokens) exceed the memory's \
                 budget of {} tokens; raise the budget or shorten them",
                self.budget
            )));
        }
        // Start the kept history at a user message when one can start it (some APIs require it).
        while keep_from + 1 < turns.len() && turns[keep_from].first().is_some_and(|m| m.role != Role::User) {
            keep_from += 1;
        }
        let dropped = turns[..keep_from].iter().flatten().cloned().collect();
        let kept = turns[keep_from..].iter().flatten().cloned().collect();
        Ok((system, dropped, kept))
    }
}

/// Groups messages into turns that must stay together: an assistant message with tool calls and the tool results
/// that follow it form one turn; every other message is a turn of its own.
fn turns(messages: Vec<Message>) -> Vec<Vec<Message>> {
    let mut out: Vec<Vec<Message>> = Vec::new();
    for m in messages {
        let joins_previous = m.role == Role::Tool
            && out.last().is_some_and(|t| t.first().is_some_and(|first| !first.tool_calls.is_empty()));
        match (joins_previous, out.last_mut()) {
            (true, Some(turn)) => turn.push(m),
            _ => out.push(vec![m]),
        }
    }
    out
}

#[async_trait]
impl Memory for TokenWindow {
    async fn fit(&self, conversation: &[Message]) -> Result<Vec<Message>> {
        let (mut system, _, kept) = self.split(conversation)?;
        system.extend(kept);
        Ok(system)
    }
}

/// A [`TokenWindow`] that replaces the turns it drops with a summary written by a model, as a system message
/// after the others. The summary's length is part of the budget: the window keeps `summary_tokens` free for it.
/// The last summary is cached, so a conversation that grows by a turn is summarised again only when more turns
/// drop out.
pub struct SummaryWindow {
    window: TokenWindow,
    summary_tokens: usize,
    llm: Arc<dyn Llm>,
    request: ChatRequest,
    cache: Mutex<Option<(Vec<Message>, String)>>,
}

impl std::fmt::Debug for SummaryWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SummaryWindow")
            .field("window", &self.window)
            .field("summary_tokens", &self.summary_tokens)
            .finish_non_exhaustive()
    }
}

impl SummaryWindow {
    /// Summaries by `llm` of at most `summary_tokens` tokens (the limit is also sent as the request's
    /// `max_tokens`), inside `window`'s budget. `request` gives the model settings (temperature, model name).
    pub fn new(window: TokenWindow, summary_tokens: usize, llm: Arc<dyn Llm>, request: ChatRequest) -> Self {
        SummaryWindow { window, summary_tokens, llm, request, cache: Mutex::new(None) }
    }

    async fn summarise(&self, dropped: &[Message]) -> Result<String> {
        if let Some((messages, summary)) = &*self.cache.lock().unwrap_or_else(PoisonError::into_inner) {
            if messages == dropped {
                return Ok(summary.clone());
            }
        }
        let transcript: Vec<String> = dropped.iter().map(|m| m.to_string()).collect();
        let request = ChatRequest {
            messages: vec![
                Message::system(
                    "Summarise the conversation below for the assistant that continues it: keep facts, names, \
                     numbers, decisions and open questions; drop pleasantries. Write plain sentences.",
                ),
                Message::user(transcript.join("\n")),
            ],
            max_tokens: Some(u32::try_from(self.summary_tokens).unwrap_or(u32::MAX)),
            tools: Vec::new(),
            tool_choice: None,
            constraint: None,
            ..self.request.clone()
        };
        let summary = self.llm.chat(request).await?.text().trim().to_string();
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = Some((dropped.to_vec(), summary.clone()));
        Ok(summary)
    }
}

#[async_trait]
impl Memory for SummaryWindow {
    async fn fit(&self, conversation: &[Message]) -> Result<Vec<Message>> {
        let reserved = TokenWindow {
            budget: self.window.budget.saturating_sub(self.summary_tokens + self.window.per_message),
            ..self.window.clone()
        };
        let (mut out, dropped, kept) = reserved.split(conversation)?;
        if !dropped.is_empty() {
            let summary = self.summarise(&dropped).await?;
            out.push(Message::system(format!("Summary of the earlier conversation: {summary}")));
        }
        out.extend(kept);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use catena_core::ToolCall;

    fn words() -> Arc<dyn TokenCounter> {
        Arc::new(|t: &str| t.split_whitespace().count())
    }

    fn calling(id: &str) -> Message {
        let mut m = Message::assistant("");
        m.tool_calls.push(ToolCall { id: id.into(), name: "lookup".into(), arguments: "{}".into() });
        m
    }

    #[tokio::test]
    async fn tool_results_stay_with_their_call_and_history_starts_at_a_user_message() {
        let conversation = vec![
            Message::system("s"),
            Message::user("a b c d"),
            calling("1"),
            Message::tool_result("1", "r r r r r r"),
            Message::assistant("x y"),
            Message::user("q"),
        ];
        // Costs (per message 1): system 2, user 5, call 1+1+1=3, result 7, assistant 3, user 2.
        let fit = |budget| TokenWindow::new(budget, 1, words());
        let all = fit(100).fit(&conversation).await.unwrap();
        assert_eq!(all, conversation);
        // 17 would fit the call turn (10) + assistant + user, but history must start at a user message: the
        // window drops the call turn and the assistant message rather than start with them.
        let kept = fit(17).fit(&conversation).await.unwrap();
        assert_eq!(kept, vec![conversation[0].clone(), conversation[5].clone()]);
        let kept = fit(21).fit(&conversation).await.unwrap();
        assert_eq!(kept, vec![conversation[0].clone(), conversation[5].clone()]);
        let kept = fit(22).fit(&conversation).await.unwrap();
        assert_eq!(kept, conversation);
        let err = fit(3).fit(&conversation).await.unwrap_err().to_string();
        assert!(err.contains("exceed the memory's budget of 3 tokens"), "{err}");
        // A result never appears without its call.
        for budget in 0..30 {
            if let Ok(kept) = fit(budget).fit(&conversation).await {
                let results = kept.iter().filter(|m| m.role == Role::Tool).count();
                let calls = kept.iter().filter(|m| !m.tool_calls.is_empty()).count();
                assert_eq!(results, calls, "budget {budget}: {kept:?}");
            }
        }
    }
}
