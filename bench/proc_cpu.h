/* A process's CPU time from /proc/PID/stat, for the benches that report server CPU per user
 * (batch.c, drain.c). Any thread. */
#ifndef PR_BENCH_PROC_CPU_H
#define PR_BENCH_PROC_CPU_H

/* utime + stime of pid, seconds; -1 if unreadable. */
double proc_cpu_seconds(int pid);

#endif
