"""When each scenario's warm-up and last job ended in a Snakemake run, from its log (the `[timestamp]` lines
before each job's start and end), in seconds since the run's first job, and how long the run had only one
scenario left (its rounds alone, one core idle at 1 thread per job):

    python benchmarks/scripts/run_timeline.py RUN_DIR      # the run's .snakemake/log/<newest>.log
"""
import re
import sys
from datetime import datetime
from pathlib import Path

run_dir = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
log = sorted((run_dir / ".snakemake" / "log").glob("*.snakemake.log"))[-1]
stamp = None
job_scenario, job_rule = {}, {}
starts, ends = {}, {}
current = None
for line in log.read_text().splitlines():
    match = re.match(r"\[(\w{3} \w{3}\s+\d+ [\d:]+ \d{4})\]", line)
    if match:
        stamp = datetime.strptime(" ".join(match.group(1).split()), "%a %b %d %H:%M:%S %Y")
        continue
    match = re.match(r"(?:local)?rule (\w+):", line)
    if match:
        current = {"rule": match.group(1), "time": stamp}
        continue
    match = re.match(r"\s+jobid: (\d+)", line)
    if match and current is not None:
        current["job"] = int(match.group(1))
        job_rule[current["job"]], starts[current["job"]] = current["rule"], current["time"]
        continue
    match = re.match(r"\s+wildcards: .*scenario=([^,\s]+)", line)
    if match and current is not None and "job" in current:
        job_scenario[current["job"]] = match.group(1)
        current = None
        continue
    match = re.match(r"Finished jobid: (\d+)", line)
    if match:
        ends[int(match.group(1))] = stamp

begin = min(starts.values())
print(f"{log}: {len(ends)} jobs, {(max(ends.values()) - begin).total_seconds():.0f} s from the first job's start")
last = {}
for scenario in sorted(set(job_scenario.values())):
    jobs = [j for j, s in job_scenario.items() if s == scenario and j in ends]
    warmup = [ends[j] for j in jobs if job_rule[j] == "warmup"]
    last[scenario] = max(ends[j] for j in jobs)
    print(f"{scenario}: warm-up ended at {(warmup[0] - begin).total_seconds():.0f} s, last job at "
          f"{(last[scenario] - begin).total_seconds():.0f} s")
ordered = sorted(last.values())
if len(ordered) > 1:
    print(f"one scenario left for the last {(ordered[-1] - ordered[-2]).total_seconds():.0f} s")
