"""Data generators and loaders. Every one yields int32 token ids, never one-hot."""
