"""The sample rates of a session's audio, shared by the pipeline, the transports and the
engines (a module of its own, so none of them imports another for a constant)."""

# The browser client records at 16 kHz and plays at 24 kHz whatever rate a frame announces.
AUDIO_IN_RATE = 16000
AUDIO_OUT_RATE = 24000
