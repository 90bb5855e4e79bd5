"""Figures of one fio run (JSON output, libiscsi engine), shared by compare.sh and paths.sh."""

GIB = 1 << 30


def figures(d, jobs=None):
    """bw (MiB/s), iops, cpu (CPU s per GiB), p99 (us), errors and user (% of CPU in user space)
    of the first group of fio's JSON `d`, or None if it moved nothing. `jobs`: how many jobs the
    group has (default: its numjobs option)."""
    try:
        j = d["jobs"][0]
    except (KeyError, IndexError, TypeError):
        return None
    side = j["write"] if j["write"]["io_bytes"] > 0 else j["read"]
    if side["runtime"] <= 0 or side["io_bytes"] <= 0:
        return None
    secs = side["runtime"] / 1000.0
    gib = side["io_bytes"] / GIB
    # usr_cpu/sys_cpu: % of one CPU over a job's run. With group_reporting fio sums both the CPU
    # time and the run time over the jobs (stat.c), so the figure is the per-job average: the
    # group's CPU is that times the number of jobs (the bytes are the group's total).
    if jobs is None:
        jobs = int(j.get("job options", {}).get("numjobs", 1) or 1)
    cpu_s = (j["usr_cpu"] + j["sys_cpu"]) / 100.0 * secs * jobs
    p99 = side.get("clat_ns", {}).get("percentile", {}).get("99.000000", 0) / 1000.0
    busy = j["usr_cpu"] + j["sys_cpu"]
    return {"bw": side["io_bytes"] / (1 << 20) / secs, "iops": side["total_ios"] / secs, "cpu": cpu_s / gib,
            "p99": p99, "errors": j.get("error", 0), "user": 100 * j["usr_cpu"] / busy if busy else None}
