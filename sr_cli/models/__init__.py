"""The model store and its formats: the weights manifest (registry), the Hugging Face cache and downloads (hub),
published checkpoints and srx's model directory (checkpoints, checkpoints_resshift), peft adapters (lora), and
name → ``SRModel`` (loading)."""
