"""The text to speech worker: Piper and Kokoro ONNX voices run by onnxruntime, phonemes from the
espeak-ng program, audio encoded by PyAV."""
