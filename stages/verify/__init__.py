"""The verify step: a saved LoRA fits its base model before anything is published."""
