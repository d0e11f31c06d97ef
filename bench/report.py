"""The run's figures as a table (Markdown, printed and written to table.md), JSON and a chart (chart.png)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.instant import instant_rows, instant_targets

# The targets for a 2-core machine.
INTAKE_TARGET = {"postgres": 2000.0, "sqlite": 1500.0}
P99_TARGET_MS = 25.0
SMS_TARGET = 2000.0
EMAIL_TARGET = 1000.0
LAG_P99_TARGET_MS = 500.0
SCALE_2_TARGET = 1.4
SCALE_4_TARGET = 1.0
# Issue #15: a chain (main order and two reminders) costs no more than 1.5 times a v1 single-recipient order per
# stored order.
CHAIN_COST_TARGET = 1.5

VARIANTS = {"email": "by address (email)", "sms": "by address (SMS)", "nin": "by identity number"}


def _num(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _cpu(cpu: dict[str, float] | None) -> str:
    if not cpu:
        return ""
    return ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())


def _met(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "**no**")


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue with the measured value and whether it is met."""
    out: list[dict[str, Any]] = []

    def add(db: str, what: str, value: float | None, goal: str, ok: bool | None) -> None:
        out.append({"db": db, "target": what, "value": value, "goal": goal, "met": ok})

    for db in ("sqlite", "postgres"):
        per = results.get(db, {})
        intake = per.get("intake", {})
        for variant in VARIANTS:
            series = intake.get(variant)
            if not isinstance(series, dict):
                continue
            sat = series["saturation"]["throughput_per_s"]
            goal = INTAKE_TARGET[db]
            add(db, f"intake {VARIANTS[variant]} orders/s", sat, f">= {goal:,.0f}", sat >= goal)
            at_1000 = series.get("rate_1000")
            if at_1000 and "skipped" in at_1000:
                add(db, f"intake {VARIANTS[variant]} p99 at 1,000/s (ms)", None, f"<= {P99_TARGET_MS:g}", False)
            elif at_1000:
                p99 = at_1000["latency"]["p99_ms"]
                add(db, f"intake {VARIANTS[variant]} p99 at 1,000/s (ms)", p99, f"<= {P99_TARGET_MS:g}",
                    p99 <= P99_TARGET_MS)  # fmt: skip
        comparison = per.get("chain", {}).get("comparison")
        if isinstance(comparison, dict):
            add(db, "chain intake chains/s", comparison.get("chains_per_s"), "", None)
            add(db, "chain intake orders stored/s (3 per chain)", comparison.get("orders_stored_per_s"), "", None)
            for key, what in (("cost_ratio_cpu", "API CPU"), ("cost_ratio_time", "time")):
                value = comparison.get(key)
                add(db, f"cost per stored order, chain / v1 order ({what})", value, f"<= {CHAIN_COST_TARGET:g}",
                    None if value is None else value <= CHAIN_COST_TARGET)  # fmt: skip
        feed = per.get("feed", {}).get("varsel")
        if isinstance(feed, dict) and "entries_per_s" in feed:
            add(db, f"feed read by {feed['page_size']}, entries/s", feed["entries_per_s"], "", None)
        out.extend(instant_targets(db, per.get("instant", {})))
        dispatch = per.get("dispatch", {})
        for key, goal in (("sms_0ms", SMS_TARGET), ("email_0ms", EMAIL_TARGET)):
            run = dispatch.get(key)
            if isinstance(run, dict) and "throughput_per_s" in run:
                value = run["throughput_per_s"]
                add(db, f"dispatch {run['channel']} /s", value, f">= {goal:,.0f}", value >= goal)
        lag = per.get("lag", {}).get("steady")
        if isinstance(lag, dict) and "lag" in lag:
            p99 = lag["lag"]["p99_ms"]
            add(db, f"scheduling lag p99, steady {lag.get('rate_per_s')}/s (ms)", p99, f"<= {LAG_P99_TARGET_MS:g}",
                p99 <= LAG_P99_TARGET_MS)  # fmt: skip
        scaling = per.get("scaling", {})
        if "ratio_2_to_1" in scaling:
            r2, r4 = scaling["ratio_2_to_1"], scaling["ratio_4_to_2"]
            add(db, "2 workers / 1 worker", r2, f">= {SCALE_2_TARGET}", None if r2 is None else r2 >= SCALE_2_TARGET)
            add(db, "4 workers / 2 workers", r4, f">= {SCALE_4_TARGET}", None if r4 is None else r4 >= SCALE_4_TARGET)
    return out


def _rows(results: dict[str, Any]) -> Iterator[list[str]]:
    for db in ("sqlite", "postgres"):
        per = results.get(db)
        if not per:
            continue
        intake = per.get("intake", {})
        if "error" in intake:
            yield [db, "intake", "failed: " + intake["error"][:80], "", "", "", ""]
        http = intake.get("http_ceiling", {})
        # The ceiling for varsel as built (group commit): the driver alone writing the same rows grouped as varsel
        # groups them. Older runs without it fall back to one transaction per order through varsel's Database.
        dbc = intake.get("db_ceiling_driver_grouped") or intake.get("db_ceiling_sqlalchemy", {})
        per_order = intake.get("db_ceiling_sqlalchemy", {})
        raw = intake.get("db_ceiling_driver", {})
        for variant, label in VARIANTS.items():
            series = intake.get(variant)
            if not isinstance(series, dict):
                continue
            sat = series["saturation"]
            http_sat = http.get("saturation", {}).get("throughput_per_s")
            extra = "".join(
                f"; {name} {_num(intake[key]['throughput_per_s'])}"
                for key, name in (("db_ceiling_sqlalchemy_prebuilt", "statements built once"),
                                  ("db_ceiling_sqlalchemy_serialized", "writers serialised in-process"))
                if isinstance(intake.get(key), dict) and "throughput_per_s" in intake[key]
            )  # fmt: skip
            http_cost = cpu_ms(http.get("saturation"), "server")
            cost = cpu_ms(sat, "server")
            grouped = "db_ceiling_driver_grouped" in intake
            base = (f"HTTP ceiling {_num(http_sat)}{_cost(http_cost)}; DB ceiling "
                    f"{_num(dbc.get('throughput_per_s'))}{_cost(cpu_ms(dbc, 'inserter'))}"
                    + (" (driver, grouped as varsel groups); one transaction per order: varsel's Database "
                       f"{_num(per_order.get('throughput_per_s'))}{_cost(cpu_ms(per_order, 'inserter'))}"
                       if grouped else "")
                    + f" (driver alone {_num(raw.get('throughput_per_s'))}{extra})")  # fmt: skip
            ratios = (f"{_num(_r(sat['throughput_per_s'], http_sat), 2)} of HTTP; "
                      f"{_num(_r(sat['throughput_per_s'], dbc.get('throughput_per_s')), 2)} of DB; "
                      f"CPU per order {_num(_r(cost, http_cost), 1)} x HTTP's")  # fmt: skip
            yield [db, f"intake {label}, saturation ({sat['connections']} conn.)",
                   f"{_num(sat['throughput_per_s'])} orders/s{_cost(cost)}, p50 {sat['latency']['p50_ms']} ms, "
                   f"p99 {sat['latency']['p99_ms']} ms{_errors(sat)}", base, ratios,
                   f">= {INTAKE_TARGET[db]:,.0f}/s", _cpu(sat.get("cpu"))]  # fmt: skip
            skipped = [int(k[5:]) for k, v in series.items() if k.startswith("rate_") and "skipped" in v]
            if skipped:
                yield [db, f"intake {label}, {', '.join(f'{r:,}' for r in skipped)}/s offered",
                       f"not run: above 1.25 x the saturation rate ({_num(sat['throughput_per_s'])}/s)", "", "",
                       f"p99 <= {P99_TARGET_MS:g} ms at 1,000/s" if 1000 in skipped else "", ""]  # fmt: skip
            for key, run in series.items():
                if not key.startswith("rate_") or "skipped" in run:
                    continue
                rate = int(key[5:])
                bare = http.get(key, {}).get("latency", {})
                yield [db, f"intake {label}, {rate:,}/s offered",
                       f"p50 {run['latency']['p50_ms']} ms, p99 {run['latency']['p99_ms']} ms, max "
                       f"{run['latency']['max_ms']} ms ({_num(run['throughput_per_s'])}/s done){_errors(run)}",
                       f"HTTP ceiling p50 {bare.get('p50_ms', '-')} ms, p99 {bare.get('p99_ms', '-')} ms", "",
                       f"p99 <= {P99_TARGET_MS:g} ms" if rate == 1000 else "", _cpu(run.get("cpu"))]  # fmt: skip
        yield from _chain_rows(db, per.get("chain", {}))
        yield from _feed_rows(db, per.get("feed", {}))
        yield from instant_rows(db, per.get("instant", {}))
        dispatch = per.get("dispatch", {})
        if "error" in dispatch:
            yield [db, "dispatch", "failed: " + dispatch["error"][:80], "", "", "", ""]
        for run in dispatch.values():
            if not isinstance(run, dict) or "throughput_per_s" not in run:
                continue
            bare = run.get("bare_client", {})
            latency = run["peer_latency_ms"]
            what = f"dispatch {run['channel']}, {run['count']:,} msgs, peer +{latency:g} ms, log {run['log_level']}"
            base = f"bare client {_num(bare.get('throughput_per_s'))}/s{_cost(cpu_ms(bare, 'client'))}" if bare else ""
            raw = run.get("raw_http_client")
            if raw:
                base += f"; raw HTTP client {_num(raw.get('throughput_per_s'))}/s"
            if "concurrency_bound_per_s" in run:
                base += f"; bound {run['concurrency']}/{latency / 1000:g} s = {_num(run['concurrency_bound_per_s'])}/s"
            goal = ""
            if latency == 0 and run["log_level"] == results["meta"]["log_level"]:
                goal = f">= {SMS_TARGET if run['channel'] == 'sms' else EMAIL_TARGET:,.0f}/s"
            cost, bare_cost = cpu_ms(run, "workers"), cpu_ms(bare, "client")
            cost_ratio = f"; CPU per message {_num(_r(cost, bare_cost), 1)} x bare" if bare_cost else ""
            yield [db, what, f"{_num(run['throughput_per_s'])}/s{_cost(cost)} ({run['elapsed_s']} s)", base,
                   _num(run.get("ratio_to_bare"), 2) + cost_ratio, goal, _cpu(run.get("cpu"))]  # fmt: skip
        lag = per.get("lag", {})
        if "error" in lag:
            yield [db, "lag", "failed: " + lag["error"][:80], "", "", "", ""]
        for key in ("steady", "burst"):
            run = lag.get(key)
            if not isinstance(run, dict):
                continue
            stats = run["lag"]
            if key == "steady":
                what = f"scheduling lag, {run['orders']:,} orders due at {run['rate_per_s']}/s"
                goal = f"p99 <= {LAG_P99_TARGET_MS:g} ms"
                base = "Altinn: cron, a minute or more"
            else:
                what = f"scheduling lag, burst of {run['orders']:,} due at once"
                goal = ""
                base = f"{_num(run.get('orders_per_s_through'))} orders/s through"
            yield [db, what, f"p50 {stats['p50_ms']} ms, p99 {stats['p99_ms']} ms, max {stats['max_ms']} ms", base,
                   "", goal, _cpu(run.get("cpu"))]  # fmt: skip
        scaling = per.get("scaling", {})
        if "error" in scaling:
            yield [db, "scaling", "failed: " + scaling["error"][:80], "", "", "", ""]
        for workers in (1, 2, 4):
            run = scaling.get(f"workers_{workers}")
            if not isinstance(run, dict):
                continue
            r = {1: "", 2: _num(scaling.get("ratio_2_to_1"), 2) + " of 1", 4: _num(scaling.get("ratio_4_to_2"), 2)
                 + " of 2"}[workers]  # fmt: skip
            goal = {1: "", 2: f">= {SCALE_2_TARGET} x 1", 4: ">= 1.0 x 2"}[workers]
            yield [db, f"scaling: {workers} worker process(es), {run['count']:,} SMS",
                   f"{_num(run['throughput_per_s'])}/s{_cost(cpu_ms(run, 'workers'))}", "", r, goal,
                   _cpu(run.get("cpu"))]  # fmt: skip


def _chain_rows(db: str, step: dict[str, Any]) -> Iterator[list[str]]:
    """v2 chain intake beside v1 intake by identity number and the HTTP ceiling (the chain's requests)."""
    if "error" in step:
        yield [db, "chain intake", "failed: " + step["error"][:80], "", "", "", ""]
    http = step.get("http_ceiling", {})
    comparison = step.get("comparison", {})
    per_chain = step.get("orders_per_chain", 3)
    chain_label = f"v2 chain intake (person + 2 reminders, {per_chain} orders)"
    for variant, label, unit in (("nin", "v1 intake by identity number (chain step)", "orders"),
                                 ("chain", chain_label, "chains")):  # fmt: skip
        series = step.get(variant)
        if not isinstance(series, dict):
            continue
        sat = series["saturation"]
        http_sat = http.get("saturation", {})
        cost, http_cost = cpu_ms(sat, "server"), cpu_ms(http_sat, "server")
        measured = (f"{_num(sat['throughput_per_s'])} {unit}/s{_cost(cost)}, p50 {sat['latency']['p50_ms']} ms, "
                    f"p99 {sat['latency']['p99_ms']} ms{_errors(sat)}")  # fmt: skip
        ratios = f"{_num(_r(sat['throughput_per_s'], http_sat.get('throughput_per_s')), 2)} of HTTP"
        goal = ""
        if variant == "chain":
            measured += f" = {_num(comparison.get('orders_stored_per_s'))} orders stored/s"
            ratios += (f"; per stored order vs v1: API CPU {_num(comparison.get('cost_ratio_cpu'), 2)} x, "
                       f"time {_num(comparison.get('cost_ratio_time'), 2)} x")  # fmt: skip
            goal = f"<= {CHAIN_COST_TARGET:g} x v1 per stored order"
        yield [db, f"{label}, saturation ({sat['connections']} conn.)", measured,
               f"HTTP ceiling (chain requests) {_num(http_sat.get('throughput_per_s'))}{_cost(http_cost)}", ratios,
               goal, _cpu(sat.get("cpu"))]  # fmt: skip
        skipped = [int(k[5:]) for k, v in series.items() if k.startswith("rate_") and "skipped" in v]
        if skipped:
            above = f"not run: above 1.25 x the saturation rate ({_num(sat['throughput_per_s'])}/s)"
            yield [db, f"{label}, {', '.join(f'{r:,}' for r in skipped)}/s offered", above, "", "", "", ""]
        for key, run in series.items():
            if not key.startswith("rate_") or "skipped" in run:
                continue
            bare = http.get(key, {}).get("latency", {})
            yield [db, f"{label}, {int(key[5:]):,}/s offered",
                   f"p50 {run['latency']['p50_ms']} ms, p99 {run['latency']['p99_ms']} ms, max "
                   f"{run['latency']['max_ms']} ms ({_num(run['throughput_per_s'])}/s done){_errors(run)}",
                   f"HTTP ceiling p50 {bare.get('p50_ms', '-')} ms, p99 {bare.get('p99_ms', '-')} ms", "", "",
                   _cpu(run.get("cpu"))]  # fmt: skip


def _feed_rows(db: str, step: dict[str, Any]) -> Iterator[list[str]]:
    """Paging through the status feed: varsel's API, the bare app serving the same page, the repository alone."""
    if "error" in step:
        yield [db, "feed", "failed: " + step["error"][:80], "", "", "", ""]
    run = step.get("varsel")
    if not isinstance(run, dict):
        return
    http, below = step.get("http_ceiling", {}), step.get("repository", {})
    cost = cpu_ms(run, "server")
    base = (f"HTTP ceiling (same page, bare app) {_num(http.get('entries_per_s'))}/s"
            f"{_cost(cpu_ms(http, 'server'))}; repository alone (read_feed) "
            f"{_num(below.get('entries_per_s'))}/s")  # fmt: skip
    latency = run["page_latency"]
    yield [db, f"feed read, {step.get('stored_entries', step.get('entries')):,} entries by {run['page_size']}",
           f"{_num(run['entries_per_s'])} entries/s{_cost(cost)}, page p50 {latency['p50_ms']} ms, p99 "
           f"{latency['p99_ms']} ms", base,
           f"{_num(_r(run['entries_per_s'], http.get('entries_per_s')), 2)} of HTTP; "
           f"{_num(_r(run['entries_per_s'], below.get('entries_per_s')), 2)} of repository", "",
           _cpu(run.get("cpu"))]  # fmt: skip


def cpu_ms(run: dict[str, Any] | None, role: str) -> float | None:
    """CPU milliseconds the process(es) in `role` spent per item: what the machine's load does not change much,
    where throughput depends on how much of the two cores the run got."""
    if not run or not run.get("throughput_per_s"):
        return None
    share = (run.get("cpu") or {}).get(role)
    if share is None:
        return None
    return float(1000 * share / run["throughput_per_s"])


def _cost(ms: float | None) -> str:
    return "" if ms is None else f" ({ms:.2f} ms CPU each)"


def _r(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _errors(run: dict[str, Any]) -> str:
    bad = sum(n for status, n in run.get("statuses", {}).items() if not status.startswith("2"))
    bad += run.get("unanswered", 0) + run.get("lost_connections", 0)
    return f", {bad} errors" if bad else ""


def table(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    header = ["db", "benchmark", "varsel", "baseline (same run)", "ratio", "target", "CPU (cores)"]
    code = meta.get("code") or {}
    changed = [f"{db} {name}" for db in ("sqlite", "postgres") for name, step in results.get(db, {}).items()
               if isinstance(step, dict) and (step.get("code_changed_during_step")
                                              or (step.get("code") and step.get("code") != code))]  # fmt: skip
    lines = [
        f"varsel benchmarks: {meta.get('mode')} mode, VARSEL_LOG_LEVEL={meta.get('log_level')}, "
        f"{meta.get('machine', {}).get('cpus')} CPUs, run took {meta.get('duration_s')} s, "
        f"commit {code.get('commit') or str(meta.get('machine', {}).get('git_commit', ''))[:10]}"
        + (f" + uncommitted changes {code['uncommitted']}" if code.get("uncommitted") else ""),
        *(
            [f"note: the code changed during the run (others work in this tree): {', '.join(changed)}"]
            if changed
            else []
        ),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(results)]
    lines += ["", "| db | target | measured | goal | met |", "|---|---|---|---|---|"]
    for t in targets(results):
        value = t["value"]
        shown = _num(value, 2) if isinstance(value, float) and value < 10 else _num(value)
        lines.append(f"| {t['db']} | {t['target']} | {shown} | {t['goal']} | {_met(t['met'])} |")
    return "\n".join(lines)


def write(results: dict[str, Any], out: Path) -> None:
    # The figures first: whatever goes wrong in presenting them must not lose them.
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    results["targets"] = targets(results)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "table.md").write_text(table(results) + "\n")
    try:
        chart(results, out / "chart.png")
    except Exception as error:  # a chart is a convenience; the figures are in the JSON and the table
        print(f"chart not drawn: {error!r}")


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dbs = [db for db in ("sqlite", "postgres") if db in results]
    fig, axes = plt.subplots(2, 3, figsize=(18, 10))
    meta = results.get("meta", {})
    fig.suptitle(f"varsel benchmarks ({meta.get('mode')} mode, log level {meta.get('log_level')}, "
                 f"{meta.get('machine', {}).get('cpus')} CPUs, {meta.get('started')})")  # fmt: skip

    # 1. Intake saturation against its ceilings.
    ax = axes[0][0]
    labels: list[str] = []
    values: list[float] = []
    colors: list[str] = []
    for db in dbs:
        intake = results[db].get("intake", {})
        for variant in VARIANTS:
            if isinstance(intake.get(variant), dict):
                labels.append(f"{db} varsel {variant}")
                values.append(intake[variant]["saturation"]["throughput_per_s"])
                colors.append("tab:blue")
        for key, name, color in (("http_ceiling", "HTTP ceil.", "tab:gray"),
                                 ("db_ceiling_driver_grouped", "DB grouped", "darkgreen"),
                                 ("db_ceiling_sqlalchemy", "DB ceil.", "tab:olive"),
                                 ("db_ceiling_sqlalchemy_prebuilt", "DB prebuilt", "yellowgreen"),
                                 ("db_ceiling_sqlalchemy_serialized", "DB serial.", "darkkhaki"),
                                 ("db_ceiling_driver", "driver", "tab:green")):  # fmt: skip
            run = intake.get(key)
            if isinstance(run, dict):
                value = run["saturation"]["throughput_per_s"] if key == "http_ceiling" else run["throughput_per_s"]
                labels.append(f"{db} {name}")
                values.append(value)
                colors.append(color)
        comparison = results[db].get("chain", {}).get("comparison")
        if isinstance(comparison, dict):
            for key, name, color in (("v1_orders_per_s", "v1 nin (chain step)", "tab:cyan"),
                                     ("orders_stored_per_s", "v2 chain, orders stored", "tab:purple"),
                                     ("chains_per_s", "v2 chains", "plum")):  # fmt: skip
                labels.append(f"{db} {name}")
                values.append(comparison[key])
                colors.append(color)
        if db in INTAKE_TARGET and intake:
            ax.axhline(INTAKE_TARGET[db], linestyle=":", color="red" if db == "postgres" else "orange")
    ax.bar(range(len(values)), values, color=colors)
    ax.set_xticks(range(len(values)), labels, fontsize=7, rotation=60, ha="right")
    ax.set_title("Intake at saturation (orders/s) vs. ceilings")

    # 2. Intake latency at fixed rates.
    ax = axes[0][1]
    for db in dbs:
        intake = results[db].get("intake", {})
        for variant in [*VARIANTS, "http_ceiling"]:
            series = intake.get(variant)
            if not isinstance(series, dict):
                continue
            rates = sorted(int(k[5:]) for k, v in series.items() if k.startswith("rate_") and "latency" in v)
            if rates:
                ax.plot(rates, [series[f"rate_{r}"]["latency"]["p99_ms"] for r in rates], marker="o",
                        label=f"{db} {variant} p99", linestyle="--" if variant == "http_ceiling" else "-")  # fmt: skip
    ax.axhline(P99_TARGET_MS, linestyle=":", color="red")
    ax.set_yscale("log")
    ax.set_xlabel("offered orders/s")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_title("Intake p99 latency at fixed rates")
    ax.legend(fontsize=7)

    # 3. Dispatch against the bare client.
    ax = axes[0][2]
    labels, varsel_values, bare_values = [], [], []
    for db in dbs:
        for run in results[db].get("dispatch", {}).values():
            if isinstance(run, dict) and "bare_client" in run:
                labels.append(f"{db}\n{run['channel']} +{run['peer_latency_ms']:g}ms")
                varsel_values.append(run["throughput_per_s"])
                bare_values.append(run["bare_client"]["throughput_per_s"])
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], varsel_values, width=0.4, label="varsel worker", color="tab:blue")
    ax.bar([x + 0.2 for x in xs], bare_values, width=0.4, label="bare client", color="tab:gray")
    ax.axhline(SMS_TARGET, linestyle=":", color="red")
    ax.axhline(EMAIL_TARGET, linestyle=":", color="orange")
    ax.set_xticks(list(xs), labels, fontsize=7, rotation=30, ha="right")
    ax.set_title("Dispatch (messages/s) vs. a bare client")
    ax.legend(fontsize=7)

    # 4. Scheduling lag.
    ax = axes[1][0]
    labels, p50, p99, pmax = [], [], [], []
    for db in dbs:
        for key in ("steady", "burst"):
            run = results[db].get("lag", {}).get(key)
            if isinstance(run, dict) and "lag" in run:
                labels.append(f"{db}\n{key} ({run['orders']:,})")
                p50.append(run["lag"]["p50_ms"])
                p99.append(run["lag"]["p99_ms"])
                pmax.append(run["lag"]["max_ms"])
    xs = range(len(labels))
    ax.bar([x - 0.27 for x in xs], p50, width=0.27, label="p50")
    ax.bar(list(xs), p99, width=0.27, label="p99")
    ax.bar([x + 0.27 for x in xs], pmax, width=0.27, label="max")
    ax.axhline(LAG_P99_TARGET_MS, linestyle=":", color="red")
    ax.set_yscale("log")
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel("ms")
    ax.set_title("Scheduling lag: requested send time to provider call")
    ax.legend(fontsize=7)

    # 5. Scaling.
    ax = axes[1][1]
    scaling = results.get("postgres", {}).get("scaling", {})
    workers = [w for w in (1, 2, 4) if isinstance(scaling.get(f"workers_{w}"), dict)]
    if workers:
        ax.bar([str(w) for w in workers], [scaling[f"workers_{w}"]["throughput_per_s"] for w in workers])
        one = scaling.get("workers_1", {}).get("throughput_per_s")
        if one:
            ax.axhline(one * SCALE_2_TARGET, linestyle=":", color="red", label="1.4 x one worker")
            ax.legend(fontsize=7)
    ax.set_xlabel("worker processes (PostgreSQL)")
    ax.set_ylabel("SMS/s")
    ax.set_title("Scaling out: dispatch with 1, 2, 4 workers")

    # 6. CPU shares of the processes at intake saturation and dispatch.
    ax = axes[1][2]
    rows: list[tuple[str, dict[str, float]]] = []
    for db in dbs:
        email = results[db].get("intake", {}).get("email")
        if isinstance(email, dict):
            rows.append((f"{db} intake", email["saturation"].get("cpu", {})))
        sms = results[db].get("dispatch", {}).get("sms_0ms")
        if isinstance(sms, dict) and "cpu" in sms:
            rows.append((f"{db} sms", sms["cpu"]))
    roles = sorted({role for _, cpu in rows for role in cpu if role != "machine"})
    bottom = [0.0] * len(rows)
    for role in roles:
        heights = [cpu.get(role, 0.0) for _, cpu in rows]
        ax.bar([name for name, _ in rows], heights, bottom=bottom, label=role)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.axhline(meta.get("machine", {}).get("cpus") or 2, linestyle=":", color="black")
    ax.set_ylabel("cores")
    ax.set_title("Where the CPU went (email intake, SMS dispatch)")
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7)

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    # Draw the table and the chart again from a results.json: `python -m bench.report bench/results/latest`.
    import sys

    folder = Path(sys.argv[1])
    loaded = json.loads((folder / "results.json").read_text())
    write(loaded, folder)
    print(table(loaded))
