"""What a process runs on and alongside: multi-process start-up, preemption, the
workdir lock and the accelerator table."""
