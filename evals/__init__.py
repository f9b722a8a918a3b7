"""Scripted conversation evals: YAML scenarios in the shape of Pipecat's own evals
(`pipecat.evals`), played against the real pipeline as typed text or as speech, with a JSON and
Markdown report. Run `python -m evals --help`."""
