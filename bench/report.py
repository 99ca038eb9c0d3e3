"""The serving benchmark's printed report: per model, the in-process sweep, the load levels against
the limits, the c=1 latency against its floor and the targets; then RSS, cold start and the
runtime comparisons."""

from __future__ import annotations


def report(results: dict) -> list[str]:
    failures = []
    for model, result in results["models"].items():
        sweep = result["in_process_sweep"]
        configs = result["batched"]["limit_configs"]
        size = result["input_size"]
        print(f"\n== {model} at {size}x{size}: in-process images/s by batch size")
        for callers in sorted({entry["callers"] for entry in sweep}):
            print(
                f"   {callers} thread{'s' if callers > 1 else ''} calling: "
                + ", ".join(
                    f"{entry['batch']}: {entry['images_per_s']:.1f}"
                    for entry in sweep
                    if entry["callers"] == callers
                )
            )
        threads = configs["concurrent_limit"]["callers"]
        print(
            f"   limit: one thread, batch {configs['limit']['batch']}; concurrent limit: "
            f"{threads} thread{'s' if threads > 1 else ''}, batch {configs['concurrent_limit']['batch']}"
        )
        print(
            f"   {'conc':>4} | {'limit':>6} {'c.lim':>6} | {'batched img/s':>13} {'p50':>7} {'p95':>7} "
            f"{'p99':>7} {'err':>4} {'/limit':>6} {'/c.lim':>6} | {'unbatched img/s':>15} {'p50':>7} "
            f"{'p99':>7} {'err':>4} | {'b/unb':>6}"
        )
        for on, off in zip(result["batched"]["levels"], result["unbatched"]["levels"]):
            gain = on["images_per_s"] / off["images_per_s"] if off["images_per_s"] else float("nan")
            print(
                f"   {on['concurrency']:>4} | {on['limit_images_per_s']:6.1f} "
                f"{on['concurrent_limit_images_per_s']:6.1f} | {on['images_per_s']:13.1f} "
                f"{on['p50_ms']:7.1f} {on['p95_ms']:7.1f} {on['p99_ms']:7.1f} {on['errors']:4d} "
                f"{on['ratio_to_limit']:6.2f} {on['ratio_to_concurrent_limit']:6.2f} | "
                f"{off['images_per_s']:15.1f} {off['p50_ms']:7.1f} "
                f"{off['p99_ms']:7.1f} {off['errors']:4d} | {gain:6.2f}"
            )
            if on["errors"] or off["errors"]:
                failures.append(f"{model}: errors at concurrency {on['concurrency']}")
        c16 = next(level for level in result["batched"]["levels"] if level["concurrency"] == 16)
        latency = result["batched"]["c1_latency"]
        overhead = latency["overhead_ms"]
        parts = latency["breakdown_ms"]
        by_process = " / ".join(f"{ms:.1f}" for ms in latency["in_process_p50_by_process_ms"])
        by_server = " / ".join(f"{ms:.1f}" for ms in latency["served_p50_by_process_ms"])
        print(
            f"   c=1 p50: served {latency['served']['p50_ms']:.1f} ms (by server process: {by_server}), "
            f"in-process single image {latency['in_process']['p50_ms']:.1f} ms (same processes: {by_process})"
        )
        rounds = len(latency["overhead_by_round_ms"])
        print(f"   served minus in-process, median of {rounds} alternating rounds: {overhead:+.1f} ms")
        floor = latency.get("bare_grpc_floor")
        if floor:
            floor_by_process = " / ".join(
                f"{a:.1f}-{b:.1f}"
                for a, b in zip(floor["served_p50_by_process_ms"], floor["in_process_p50_by_process_ms"])
            )
            print(
                f"   the floor, a bare grpc.aio handler running the same signature in a thread (bytes in and "
                f"out; served-in-process by process {floor_by_process} ms): {floor['overhead_ms']:+.1f} ms, "
                f"so this server's own share is {overhead - floor['overhead_ms']:+.1f} ms"
            )
        print(
            f"   served call (mean): model call in the server {parts['model_call_in_server']:.1f} ms + "
            f"server code {parts['server_outside_model_call']:.1f} ms + client and loopback "
            f"{parts['client_and_transport']:.1f} ms"
        )
        for key, prefix, name in (
            ("limit", "target", "server/limit"),
            ("concurrent_limit", "stricter,", "server/concurrent limit"),
        ):
            ratio = c16[f"ratio_to_{key}"]
            print(f"   {prefix} {name} at c=16 >= 0.90: {ratio:.2f} {'OK' if ratio >= 0.9 else 'MISSED'}")
            if ratio < 0.9:
                failures.append(f"{model}: {name} {ratio:.2f} < 0.90 at concurrency 16")
        verdict = "OK" if overhead <= 3 else "MISSED"
        print(f"   target c=1 p50 <= in-process single image + 3 ms: {overhead:+.1f} ms {verdict}")
        if overhead > 3:
            failures.append(f"{model}: c=1 p50 {overhead:.1f} ms over the in-process single-image latency")
    swaps = results.get("swaps")
    if swaps:
        print(
            f"\nRSS: {swaps['rss_warm_mib']:.0f} MiB after warm-up, {swaps['rss_after_swaps_mib']:.0f} MiB "
            f"after {swaps['swaps']} hot swaps under load ({swaps['growth']:+.1%}; target <= +15%), "
            f"{swaps['errors']} errors in {swaps['requests']} requests"
        )
        if swaps["growth"] > 0.15 or swaps["errors"]:
            failures.append("RSS growth over hot swaps above 15% or errors during swaps")
    cold = results.get("cold_start")
    if cold:
        print(
            f"cold start (process start -> SERVING, {', '.join(cold['models'])}): "
            f"{cold['cold_start_s']:.1f} s"
        )
    if results.get("default_rss"):
        report_default_rss(results["default_rss"])
    if results.get("runtime_models"):
        report_runtime_models(results["runtime_models"])
    return failures


def report_default_rss(rss: dict) -> None:
    print(
        f"\nRSS of a plain server with the defaults loaded ({', '.join(rss['models'])}), at SERVING / "
        f"after {rss['requests']} Classify calls at concurrency {rss['concurrency']}:"
    )
    for label in ("before", "after"):
        entry = rss[label]
        runtimes = ", ".join(
            f"{model} on {status['runtime']}" for model, status in sorted(entry["runtimes"].items())
        )
        print(
            f"   {label}, runtime {entry['runtime_setting']}: {entry['rss_serving_mib']:.0f} / "
            f"{entry['rss_after_load_mib']:.0f} MiB, {entry['errors']} errors ({runtimes})"
        )
    for model, status in sorted(rss["after"]["runtimes"].items()):
        if status["runtime"] != "onnxruntime":
            print(f"   {model} stays on {status['runtime']} with runtime auto: {status['runtime_detail']}")


def report_runtime_models(compared: dict) -> None:
    for spec, result in compared.items():
        print(f"\n== {spec} ({result['weights']} weights): TensorFlow vs ONNX Runtime in-process")
        head = result["with_head"]
        if head.get("onnx_kinds") and head["runtime"] != "onnxruntime":  # a features-only twin
            print(f"   with its head: {head['runtime_detail']}")
        elif head["runtime"] != "onnxruntime":
            print(f"   with its head: stays on {head['runtime']} ({head['runtime_detail']})")
        if "error" in result:
            print(f"   not compared: {result['error']}")
            continue
        print(f"   measured: {result['measured']}, the {result['kind']} function (decode + network)")
        for runtime, entry in result["runtimes"].items():
            configs = ", ".join(
                f"{config}: {max(rates):.1f}"
                for config, rates in entry["images_per_s_by_callers_x_batch"].items()
            )
            print(
                f"   {runtime:>11}: single image p50 {entry['single_p50_ms']:.1f} ms; images/s by threads x "
                f"batch {configs}; best {entry['best_images_per_s']:.1f} ({entry['best_callers_x_batch']})"
            )
        print(
            f"   ORT / TF: best images/s {result['speedup_best']:.2f}x, "
            f"single image {result['speedup_single']:.2f}x"
        )
        rates = result["feature_extraction"]["images_per_s"]
        print(
            f"   fine-tuning feature extraction ({result['measured']}): TF {rates['tensorflow']:.1f}, "
            f"ORT {rates['onnxruntime']:.1f} img/s, {result['feature_extraction']['speedup']:.2f}x"
        )
