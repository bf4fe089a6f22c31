"""speechtotext: the application, importable and testable without Ray."""

import warnings

# pyannote (imported by WhisperX) warns at import when torchcodec cannot find FFmpeg's shared
# libraries. We never let it decode files: audio reaches it as in-memory arrays (PyAV decodes).
warnings.filterwarnings("ignore", message=r"\s*torchcodec is not installed correctly")
