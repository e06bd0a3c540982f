"""The Fashion-MNIST recipe's report: one table (Markdown and JSON) of what each row cost and what
it gave, its loss curves, and its results against its training time, drawn with matplotlib.

    /usr/bin/python3 share/mdx/recipes/report.py DIR

Reads DIR/<row>.ckpt.metrics.jsonl, gen/<row>.ckpt.metrics.jsonl, *.seconds, probe/*.json,
fid/*.json and fid/*.class.json, whichever exist; writes DIR/results.md, DIR/results.json,
DIR/loss-curves.png and DIR/compute.png, and prints the Markdown table. Rows trained for fewer
pre-training steps than the longest are marked "smaller scale".

After the recipe's --compare (DIR/flops/ holds each phase's step_gflop) it also writes the table
of equal compute (training TFLOP; the probe at half and at the end of pre-training; the Frechet
distance of 10 000 samples and the spread of five draws of 2 000; the samples recognized), its
rows averaged over training seeds (umd-seed1, ...), and DIR/compare.png: probe accuracy, Frechet
distance and recognized share against training compute per objective.
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OBJECTIVES = ("umd", "mae", "ldae", "dit", "mage", "lmd", "latent-umd")


def base(name):
    """The objective of a row: umd-seed1 is umd under training seed 1."""
    return name.split("-seed")[0]


def row_names(d):
    """The rows that were pre-trained, in the objectives' order, each objective's seeds after it."""
    found = [f[:-len(".ckpt.metrics.jsonl")] for f in os.listdir(d) if f.endswith(".ckpt.metrics.jsonl")]
    found = [r for r in found if base(r) in OBJECTIVES]
    return sorted(found, key=lambda r: (OBJECTIVES.index(base(r)), r))
COLOURS = {"umd": "#d62728", "mae": "#1f77b4", "ldae": "#2ca02c", "dit": "#9467bd", "mage": "#ff7f0e",
           "lmd": "#17becf", "latent-umd": "#8c564b"}


def load_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read().strip()
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:  # a JSON line per table (the classifier's): the last one
        return json.loads(text.splitlines()[-1])


def metrics(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def seconds(path):
    return int(open(path).read().strip()) if os.path.exists(path) else None


def tables(probe):
    """"train rows / test rows" of a probe report (mdx-probe's JSON), or None."""
    if not probe or "train" not in probe or "test" not in probe:
        return None
    return f"{probe['train']['rows']} / {probe['test']['rows']}"


def fmt(value, spec):
    return "" if value is None else format(value, spec)


def row(d, objective):
    pre = metrics(os.path.join(d, f"{objective}.ckpt.metrics.jsonl"))
    gen = metrics(os.path.join(d, "gen", f"{objective}.ckpt.metrics.jsonl"))
    probe = load_json(os.path.join(d, "probe", f"{objective}.json"))
    fid = load_json(os.path.join(d, "fid", f"{objective}.json"))
    classified = load_json(os.path.join(d, "fid", f"{objective}.class.json"))
    knn = load_json(os.path.join(d, "fid", f"{objective}.knn.json"))
    sample_s = seconds(os.path.join(d, "samples", f"{objective}.seconds"))
    samples = fid["inputs"][0]["count"] if fid and fid.get("inputs") else None  # mdx-fid's report
    tail = pre[-5:]
    return {
        "objective": objective,
        "pretrain_steps": pre[-1]["step"] if pre else None,
        "first_loss": pre[0]["loss"] if pre else None,
        "final_loss": pre[-1]["loss"] if pre else None,
        "images_per_s": round(sum(m["images_per_s"] for m in tail) / len(tail), 1) if tail else None,
        "pretrain_seconds": seconds(os.path.join(d, f"{objective}.seconds")),
        "probe_top1": probe.get("top1") if probe else None,
        "probe_tables": tables(probe),
        "finetune_steps": gen[-1]["step"] if gen else None,
        "finetune_seconds": seconds(os.path.join(d, "gen", f"{objective}.seconds")),
        "fid": fid.get("fid") if fid else None,
        "sample_seconds": sample_s,
        "samples_per_s": round(samples / sample_s, 1) if samples and sample_s else None,
        "class_accuracy": classified.get("class_accuracy") if classified else None,
        "samples": samples,
        "classifier_test_top1": classified.get("classifier_test_top1") if classified else None,
        # The second judge (share/mdx/pixel_knn.py): scikit-learn's k-NN on pixels.
        "knn_accuracy": knn.get("class_accuracy") if knn else None,
        "knn": {k: knn.get(k) for k in ("k", "train_count", "classifier_test_top1")} if knn else None,
    }


def finish(ax, xlabel, ylabel):
    """A panel's labels, grid and (when anything is labelled) legend, alike in every plot."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def save(fig, path):
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_losses(d, rows, path):
    """Loss / first loss against the step, one panel per stage, log scale (the objectives' losses
    are different quantities: each is drawn relative to its own start)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, (title, sub) in zip(axes, (("pre-training", ""), ("generation fine-tune", "gen"))):
        for r in rows:
            m = [x for x in metrics(os.path.join(d, sub, f"{r['objective']}.ckpt.metrics.jsonl")) if x["loss"] > 0]
            if m:
                ax.plot([x["step"] for x in m], [x["loss"] / m[0]["loss"] for x in m], label=r["objective"],
                        color=COLOURS[base(r["objective"])], lw=1.5)
        ax.set_yscale("log")
        ax.set_title(title)
        finish(ax, "step", "loss / first loss")
    save(fig, path)


def plot_compute(rows, pixels, floor, path):
    """Probe accuracy, Frechet distance and class accuracy of the samples against the training
    time of each row (pre-training; pre-training + fine-tune for the samples)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    panels = (("probe top-1 (%)", "probe_top1", 100, ("pretrain_seconds",)),
              ("Frechet distance (classifier features)", "fid", 1, ("pretrain_seconds", "finetune_seconds")),
              ("samples recognized as their class (%)", "class_accuracy", 100, ("pretrain_seconds", "finetune_seconds")))
    for ax, (label, key, scale, cost) in zip(axes, panels):
        for r in rows:
            if r[key] is None or any(r[c] is None for c in cost):
                continue
            x = sum(r[c] for c in cost)
            ax.scatter([x], [scale * r[key]], color=COLOURS[base(r["objective"])], s=40, zorder=3)
            ax.annotate(r["objective"], (x, scale * r[key]), textcoords="offset points", xytext=(5, 4), fontsize=8)
        if key == "probe_top1":
            for p, ls in zip(pixels, ("--", ":")):
                ax.axhline(100 * p["top1"], color="grey", ls=ls, lw=1, label=f"raw pixels ({tables(p)})")
        if key == "fid":
            ax.set_yscale("log")
            if floor:
                ax.axhline(floor["fid"], color="grey", ls="--", lw=1, label="training images (floor)")
        if key == "class_accuracy":
            ax.axhline(10, color="grey", ls=":", lw=1, label="chance")
            top1 = next((r["classifier_test_top1"] for r in rows if r["classifier_test_top1"]), None)
            if top1:
                ax.axhline(100 * top1, color="grey", ls="--", lw=1, label="classifier on test images")
        ax.set_xscale("log")
        finish(ax, "training seconds" + (" (pre-train)" if len(cost) == 1 else " (pre-train + fine-tune)"), label)
    save(fig, path)


def gflop(d, name):
    """A phase's step_gflop (mdx-train --benchmark's JSON in DIR/flops/), or None."""
    j = load_json(os.path.join(d, "flops", f"{name}.json"))
    return j["step_gflop"] if j else None


def spread(values):
    """Mean, min and max of the values that exist (None when none do)."""
    v = [x for x in values if x is not None]
    return {"mean": sum(v) / len(v), "min": min(v), "max": max(v), "n": len(v)} if v else None


def compare_row(d, r):
    """What --compare measured of a row, besides row()'s: compute, the half points, the draws."""
    name, b = r["objective"], base(r["objective"])
    pre_g, ft_g = gflop(d, f"{b}.pretrain"), gflop(d, f"{b}.finetune")
    pre, ft = r["pretrain_steps"], r["finetune_steps"]
    tflop = lambda steps, g: steps * g / 1e3 if steps and g else None  # noqa: E731
    draws, draw_samples, n = [], None, 0
    while os.path.exists(os.path.join(d, "fid", f"{name}.draw{n}.json")):
        j = load_json(os.path.join(d, "fid", f"{name}.draw{n}.json"))
        draws.append(j["fid"])
        draw_samples = j["inputs"][0]["count"] if j.get("inputs") else None
        n += 1
    probe_half = load_json(os.path.join(d, "probe", f"{name}.half.json"))
    fid_half = load_json(os.path.join(d, "fid", f"{name}.half.json"))
    class_half = load_json(os.path.join(d, "fid", f"{name}.half.class.json"))
    pre_tf, ft_tf = tflop(pre, pre_g), tflop(ft, ft_g)
    half = lambda steps: (steps + 1) // 2 if steps else None  # noqa: E731  the kept step
    return {
        "row": name, "objective": b, "pretrain_steps": pre, "finetune_steps": ft, "pretrain_step_gflop": pre_g, "finetune_step_gflop": ft_g,
        "pretrain_tflop": pre_tf, "finetune_tflop": ft_tf,
        "training_tflop": pre_tf + ft_tf if pre_tf is not None and ft_tf is not None else None,
        "training_seconds": (r["pretrain_seconds"] or 0) + (r["finetune_seconds"] or 0)
        if r["pretrain_seconds"] is not None and r["finetune_seconds"] is not None else None,
        "probe_half_step": half(pre), "probe_half_top1": probe_half.get("top1") if probe_half else None,
        "probe_half_tflop": tflop(half(pre), pre_g),
        "probe_top1": r["probe_top1"], "fid": r["fid"], "samples": r["samples"], "fid_draws": draws,
        "draw_samples": draw_samples,
        "fid_draws_spread": spread(draws), "fid_half": fid_half.get("fid") if fid_half else None,
        "half_tflop": pre_tf + tflop(half(ft), ft_g) if pre_tf is not None and ft else None,
        "class_accuracy": r["class_accuracy"],
        "class_accuracy_half": class_half.get("class_accuracy") if class_half else None,
        "knn_accuracy": r["knn_accuracy"],
        "sample_seconds": r["sample_seconds"],
    }


def pct(x):
    return fmt(x and 100 * x, ".2f")


def percent(x):
    """A share as "12.3 %", or nothing."""
    return "" if x is None else f"{100 * x:.1f} %"


def compare_tables(rows, pixels, floors, known=(None, None)):
    """The --compare tables (Markdown): a line per row, then each objective over its seeds. `known`:
    the shares of the floor's training images the two judges recognize (classifier, k-NN)."""
    n_all = next((c["samples"] for c in rows if c["samples"]), "?")
    n_draw = next((c["draw_samples"] for c in rows if c["draw_samples"]), "?")
    md = ["| row | pre-train steps | fine-tune steps | training TFLOP | training s | probe top-1, half / end of "
          f"pre-training | FID, {n_all} samples | FID, {n_draw} samples: mean (min-max of the draws) | "
          f"FID at half the fine-tune ({n_draw}) | samples recognized | recognized by 5-NN on pixels | sampling s |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in rows:
        sp = c["fid_draws_spread"]
        draws = f"{sp['mean']:.2f} ({sp['min']:.2f}-{sp['max']:.2f})" if sp else ""
        md.append(f"| {c['row']} | {fmt(c['pretrain_steps'], 'd')} | {fmt(c['finetune_steps'], 'd')} | "
                  f"{fmt(c['training_tflop'], '.1f')} | {fmt(c['training_seconds'], 'd')} | "
                  f"{pct(c['probe_half_top1'])} / {pct(c['probe_top1'])} | {fmt(c['fid'], '.2f')} | {draws} | "
                  f"{fmt(c['fid_half'], '.2f')} | {fmt(c['class_accuracy'] and 100 * c['class_accuracy'], '.1f')} % | "
                  f"{percent(c['knn_accuracy'])} | {fmt(c['sample_seconds'], 'd')} |")
    for p in pixels:
        md.append(f"| raw pixels ({tables(p)}) | | | | | {100 * p['top1']:.2f} | | | | | | |")
    full, draw = floors
    if full or draw:
        md.append(f"| training images (floor) | | | | | | {fmt(full and full['fid'], '.2f')} | "
                  f"{fmt(draw and draw['fid'], '.2f')} | | {percent(known[0] and known[0]['class_accuracy'])} | "
                  f"{percent(known[1] and known[1]['class_accuracy'])} | |")
    seeds = {}
    for c in rows:
        seeds.setdefault(c["objective"], []).append(c)
    lines = []
    for objective, group in seeds.items():
        if len(group) < 2:
            continue
        cells = []
        for key, scale, spec in (("probe_top1", 100, ".2f"), ("fid", 1, ".2f"), ("class_accuracy", 100, ".1f")):
            sp = spread([c[key] and scale * c[key] for c in group])
            cells.append(f"{sp['mean']:{spec}} ({sp['min']:{spec}}-{sp['max']:{spec}})" if sp else "")
        lines.append(f"| {objective} | {len(group)} | " + " | ".join(cells) + " |")
    if lines:
        md += ["", "Over the training seeds (mean, min-max):", "",
               f"| objective | seeds | probe top-1 | FID, {n_all} samples | samples recognized (%) |",
               "|---|---:|---:|---:|---:|"] + lines
    return "\n".join(md) + "\n"


def plot_compare(rows, pixels, floor_draw, path):
    """Probe accuracy, Frechet distance (2 000 samples) and recognized share against training
    compute: a line per row from its half point to its end (training seeds dashed)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), constrained_layout=True)
    labelled = set()
    for c in rows:
        colour = COLOURS[c["objective"]]
        style = "--" if c["row"] != c["objective"] else "-"
        label = c["objective"] if c["objective"] not in labelled else None
        labelled.add(c["objective"])
        ends = c["fid_draws_spread"]
        panels = ((axes[0], (c["probe_half_tflop"], c["pretrain_tflop"]), (c["probe_half_top1"], c["probe_top1"]), 100),
                  (axes[1], (c["half_tflop"], c["training_tflop"]), (c["fid_half"], ends and ends["mean"]), 1),
                  (axes[2], (c["half_tflop"], c["training_tflop"]), (c["class_accuracy_half"], c["class_accuracy"]), 100))
        for ax, xs, ys, scale in panels:
            pts = [(x, scale * y) for x, y in zip(xs, ys) if x is not None and y is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", color=colour, label=label)
        if ends and c["training_tflop"]:
            axes[1].errorbar([c["training_tflop"]], [ends["mean"]], yerr=[[ends["mean"] - ends["min"]],
                             [ends["max"] - ends["mean"]]], color=colour, capsize=3)
    for p in pixels:
        axes[0].axhline(100 * p["top1"], color="grey", ls=":", lw=1, label=f"raw pixels ({tables(p)})")
    if floor_draw:
        axes[1].axhline(floor_draw["fid"], color="grey", ls="--", lw=1, label="training images (floor)")
    axes[1].set_yscale("log")
    axes[2].axhline(10, color="grey", ls=":", lw=1, label="chance")
    titles = (("pre-training TFLOP", "probe top-1 (%)"),
              ("training TFLOP (pre-training + fine-tune)", "Frechet distance of a draw (classifier features)"),
              ("training TFLOP (pre-training + fine-tune)", "samples recognized as their class (%)"))
    for ax, (xl, yl) in zip(axes, titles):
        finish(ax, xl, yl)
    save(fig, path)


def main():
    d = sys.argv[1]
    rows = [row(d, o) for o in row_names(d)]
    longest = max((r["pretrain_steps"] or 0 for r in rows), default=0)
    compare = os.path.isdir(os.path.join(d, "flops"))  # --compare: the rows' steps buy equal compute
    for r in rows:
        r["scale"] = "equal compute" if compare else "main" if (r["pretrain_steps"] or 0) >= longest else "smaller scale"
    # The raw pixels on the full sets and, at demo scale, on the smaller rows' subsets.
    pixels = [p for p in (load_json(os.path.join(d, "probe", f)) for f in ("pixels.json", "pixels-subsets.json")) if p]
    floor = load_json(os.path.join(d, "fid", "data.json"))
    extractor = floor.get("extractor") if floor else None
    known = load_json(os.path.join(d, "fid", "data.class.json"))
    known_knn = load_json(os.path.join(d, "fid", "data.knn.json"))
    result = {"objectives": rows,
              "raw_pixel_probes": [{"tables": tables(p), "top1": p.get("top1")} for p in pixels],
              "fid_train_vs_test": floor.get("fid") if floor else None, "fid_extractor": extractor,
              "training_images_recognized": known.get("class_accuracy") if known else None,
              "training_images_recognized_knn": known_knn.get("class_accuracy") if known_knn else None}
    md = ["| row | scale | pre-train steps | first loss | final loss | images/s | pre-train s | probe tables | "
          "probe top-1 | fine-tune steps | fine-tune s | samples/s | FID | samples recognized | "
          "recognized by 5-NN on pixels |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['objective']} | {r['scale']} | {fmt(r['pretrain_steps'], 'd')} | "
                  f"{fmt(r['first_loss'], '.4f')} | {fmt(r['final_loss'], '.4f')} | {fmt(r['images_per_s'], '.0f')} | "
                  f"{fmt(r['pretrain_seconds'], 'd')} | {r['probe_tables'] or ''} | "
                  f"{fmt(r['probe_top1'] and 100 * r['probe_top1'], '.2f')} | "
                  f"{fmt(r['finetune_steps'], 'd')} | {fmt(r['finetune_seconds'], 'd')} | "
                  f"{fmt(r['samples_per_s'], '.1f')} | {fmt(r['fid'], '.2f')} | "
                  f"{fmt(r['class_accuracy'] and 100 * r['class_accuracy'], '.1f')} | "
                  f"{fmt(r['knn_accuracy'] and 100 * r['knn_accuracy'], '.1f')} |")
    for p in pixels:
        md.append(f"| raw pixels | | | | | | | {tables(p) or ''} | {100 * p['top1']:.2f} | | | | | | |")
    if floor:
        recognized = fmt(known and 100 * known["class_accuracy"], ".1f")
        by_knn = fmt(known_knn and 100 * known_knn["class_accuracy"], ".1f")
        md.append(f"| training images | | | | | | | | | | | | {floor['fid']:.2f} | {recognized} | {by_knn} |")
    text = "\n".join(md) + "\n"
    top1 = next((r["classifier_test_top1"] for r in rows if r["classifier_test_top1"]), None)
    if top1:
        text += (f"\n\"samples recognized\": the share of a row's samples that the neutral classifier "
                 f"(share/mdx/fashion_mnist_extractor.py, {100 * top1:.2f} % on the test images) names as the "
                 f"class they were asked for; chance is 10 %.\n")
    knn = next((r["knn"] for r in rows if r["knn"]), None)
    if knn:
        test = knn.get("classifier_test_top1")
        text += (f"\n\"recognized by 5-NN on pixels\": the same share under a judge that shares no code or "
                 f"training with the project: scikit-learn's {knn['k']}-nearest-neighbours on the pixels of the "
                 f"last {knn['train_count']} training images (share/mdx/pixel_knn.py"
                 + (f", {100 * test:.2f} % on the test images" if test is not None else "") + ").\n")
    if floor:
        text += f"\nFID extractor: {json.dumps(extractor)}\n"
    if compare:
        compared = [compare_row(d, r) for r in rows]
        floors = (floor, load_json(os.path.join(d, "fid", "data.draw.json")))
        text += "\n## At equal training compute (--compare)\n\n" + compare_tables(compared, pixels, floors, (known, known_knn))
        result["compare"] = {"rows": compared, "fid_floor": floor and floor.get("fid"),
                             "fid_floor_draw": floors[1] and floors[1].get("fid")}
        plot_compare(compared, pixels, floors[1], os.path.join(d, "compare.png"))
    with open(os.path.join(d, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(d, "results.md"), "w") as f:
        f.write(text)
    print(text, end="")
    plot_losses(d, rows, os.path.join(d, "loss-curves.png"))
    plot_compute(rows, pixels, floor, os.path.join(d, "compute.png"))
    pngs = [os.path.join(root, f) for root, _, files in os.walk(d) for f in files if f.endswith(".png")]
    print("\nPictures:\n" + "\n".join("  " + p for p in sorted(pngs)), file=sys.stderr)


if __name__ == "__main__":
    main()
