"""The trainer worker (extra `train`): LoRA fine-tuning with peft over a Hugging Face format model."""
