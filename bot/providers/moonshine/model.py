"""The model this room runs, named once for the conversion, the engine and the service."""

MODEL_NAME = "moonshine-base-en"
SAMPLE_RATE = 16000  # what the model hears
