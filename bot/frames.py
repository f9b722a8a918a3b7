"""Frames of our own that travel the pipeline beside Pipecat's."""

from dataclasses import dataclass

from pipecat.frames.frames import InterimTranscriptionFrame, SystemFrame, TranscriptionFrame


@dataclass
class RequestTranscriptionFrame(TranscriptionFrame):
    """Every word of the request so far, decoded over its whole audio: it stands for the
    parts of the request already transcribed (in this user turn, or in earlier turns whose
    replies nobody heard), which it replaces rather than follows. A request dictated with
    pauses ("a bar chart of monthly sales: ... January 10, ... February 20") is transcribed
    better whole than as fragments: Moonshine hears "January 10" alone as "Can you ever
    return?"."""


@dataclass
class RequestInterimTranscriptionFrame(InterimTranscriptionFrame):
    """An interim of every word of the request so far (see `RequestTranscriptionFrame`)."""


class UserSpeechPausedFrame(SystemFrame):
    """The user went quiet mid-turn; their turn may be about to end (system frame: it stays in
    order with the microphone audio)."""


class UserSpeechResumedFrame(SystemFrame):
    """The user spoke again after `UserSpeechPausedFrame`, before the VAD reported a stop."""


class UserVoiceStartingFrame(SystemFrame):
    """The VAD hears a voice it has not yet confirmed as speech (its start delay is running):
    the user may be going on."""


class UserVoiceFadedFrame(SystemFrame):
    """The voice of `UserVoiceStartingFrame` stopped before the VAD confirmed it as speech."""


class ReplyUnheardFrame(SystemFrame):
    """The user's voice began before they could have heard the reply that was playing (it
    started less than a reaction time after the reply's first audio, or before it), and the VAD
    has now confirmed it as speech: they were going on with their request, not answering the
    reply. Pushed just before that speech's `VADUserStartedSpeakingFrame`
    (`bot.processors.unheard_reply`)."""
