"""Reliability wrappers around any provider: timeouts, retries, fallback chains, a circuit breaker, canned phrases.

Every wrapper takes a provider of one kind (STT, LLM, TTS or VAD, see `voxline.providers.base`) and is itself a
provider of that kind, so they compose from the inside out::

    tts = Fallback(CircuitBreaker(Retrying(with_timeout(eleven, first_item=0.8), attempts=2)),
                   with_timeout(piper, first_item=0.5), observer=events)

What each wrapper bounds:

- `with_timeout(p, first_item=, total=)`: time to the first item of a stream (first audio, first token, the final
  transcript after `finalize()`, a VAD probability) and to its end; expiry raises `ProviderError(retryable=True)`.
- `Retrying(p, attempts=)`: tries again on a retryable `ProviderError`, sleeping with full jitter (or the provider's
  `retry_after`). A failure *after* some output resumes instead of restarting (see below).
- `Fallback(a, b, ...)`: on any failure moves to the next provider, also in the middle of a stream:

  * TTS: the rest of the sentence is re-synthesized. Where the audio stopped in the text is estimated from the
    duration already produced and the provider's speaking rate (characters per second, learnt from its completed
    syntheses, 14 cps until then), backed off to the start of that word: the listener may hear one word twice,
    never a gap (the estimate is also shaded down by 10%).
  * LLM: the reply *continues* on the next provider, which gets the partial reply as an assistant message and a
    request to go on from there; if it starts the reply over anyway, the repeated prefix is dropped. Restarting
    would make the caller hear the start of the answer twice (it has usually been spoken already). A reply that
    broke off after a tool call is not continued (a second attempt would make the call again, and the tool would
    run twice): it fails with a non-retryable `ProviderError`.
  * STT: the audio of the turn so far (bounded, `max_replay_s`) is replayed to the next provider's stream, and a
    pending `finalize()` is repeated.
  * VAD: the next provider's stream takes over (its state starts fresh).
- `CircuitBreaker(p, failures=, cooldown=)`: after N consecutive failures the provider is skipped (a non-retryable
  `ProviderError` at once, so a `Fallback` moves on without waiting) for `cooldown` seconds, then one trial call.

Every wrapper reports what happened to an optional `observer` callable as event dicts, `{"type": "provider",
"event": "retry" | "fallback" | "timeout" | "failure" | "breaker_open" | "breaker_closed" | "phrase", "provider":
..., ...}`; session records store them. `health()` on any wrapper gives a per-provider snapshot for `/healthz`.

`FallbackPhrases` holds a few apologies synthesized at start-up in the session's voice, to play when everything
else fails; `is_no_speech` and `RetryBudget` are the session's recovery rules.

Modules: `wrapper` (what every wrapper shares: kinds, health, how a call resumes), `faces` (each kind's protocol
methods on a wrapper), `streams` (STT and VAD streams that survive their provider), `timeout`, `attempts`
(`Retrying`, `Fallback`), `breaker`, `recovery` (phrases, no-speech, the retry budget).
"""

from voxline.resilience.attempts import Fallback, Retrying
from voxline.resilience.breaker import CircuitBreaker
from voxline.resilience.recovery import DEFAULT_PHRASES, FallbackPhrases, RetryBudget, is_no_speech
from voxline.resilience.timeout import Timeout, with_timeout
from voxline.resilience.wrapper import EventLog, Health, as_provider_error, close_quietly, kind_of

__all__ = ["DEFAULT_PHRASES", "CircuitBreaker", "EventLog", "Fallback", "FallbackPhrases", "Health", "RetryBudget",
           "Retrying", "Timeout", "as_provider_error", "close_quietly", "is_no_speech", "kind_of", "with_timeout"]
