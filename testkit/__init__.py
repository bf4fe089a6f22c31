"""Helpers that the tests and the load tests share: test speech, its synthesis, WER."""
