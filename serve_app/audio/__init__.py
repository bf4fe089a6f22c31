"""Audio in: uploads read under their limits, any container decoded to 16 kHz mono, voice
activity found, and the recording cut into pieces of at most 30 s of speech as it decodes."""
