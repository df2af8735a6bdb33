//! Linux userspace side of cr: capture, registry of in-memory checkpoints, restore.
