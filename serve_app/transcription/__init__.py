"""A transcription end to end: the request checked once, the pipeline that takes a recording
through the preprocessor, the models and the diarizer, the backends that host it (in this
process or through Ray deployments), progress, and the service every entry point calls."""
