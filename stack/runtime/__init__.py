"""The lab's runtime: OS processes (start, pause, resume, stop, each in its own group, with a
PID-reuse-safe record), /proc readers, free ports and the programs' binaries."""
