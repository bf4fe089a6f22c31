"""Speech to text with Whisper: the model catalog and model=auto's choice, the engine that decodes
many pieces in one call (packing short ones into shared windows), word times, the decode batcher
that gathers pieces across requests, and the warm-up. Knows nothing of jobs or HTTP."""
