#!/usr/bin/env python3
"""hermit bench tables: printed for the terminal and collected into BENCH_DIR/results.md,
with every row that has a goal checked against it (pass / FAIL) and the ratio rows
charted against their goals (results.png, gnuplot).

  report.py init BENCH_DIR HEADER          start results.md (HEADER: one line of context)
  report.py rows BENCH_DIR TITLE TSV       rows "name, value, baseline, ratio, goal"
  report.py timing BENCH_DIR TITLE BASE TSV [NAME=GOAL]...
                                           bench_measure output, ratios vs row BASE
  report.py finish BENCH_DIR               the summary of goals and the chart

A goal is "<= 0.30x runc", ">= 0.70x in pod", "<= 20 us", "< 16 MiB": an operator, a
number, and either x (compared with the row's ratio) or the unit of the row's value
(compared with the value); words after that are for the reader. Anything else ("-")
is no goal.
"""
import os
import re
import subprocess
import sys

GOAL_RE = re.compile(r"^\s*(<=|>=|<|>)\s*([0-9]*\.?[0-9]+)\s*(x\b|[A-Za-z/]+)?")
NUM_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([A-Za-z/]+)?")


def check(goal, value, ratio):
    """'pass', 'FAIL' or '' (no goal, or nothing to compare it with)."""
    g = GOAL_RE.match(goal or "")
    if not g:
        return ""
    op, want, unit = g.group(1), float(g.group(2)), g.group(3) or ""
    if unit == "x":
        m = NUM_RE.match(ratio or "")
    else:
        m = NUM_RE.match(value or "")
        if m and unit and (m.group(2) or "") != unit:
            return ""
    if not m:
        return ""
    got = float(m.group(1))
    ok = {"<=": got <= want, ">=": got >= want, "<": got < want, ">": got > want}[op]
    return "pass" if ok else "FAIL"


def text_table(head, rows, left=(0,)):
    table = [head] + rows
    w = [max(len(r[i]) for r in table) for i in range(len(head))]
    out = []
    for j, r in enumerate(table):
        out.append(" | ".join(c.ljust(w[i]) if i in left else c.rjust(w[i])
                              for i, c in enumerate(r)).rstrip())
        if j == 0:
            out.append("-+-".join("-" * x for x in w))
    return "\n".join(out)


def md_table(head, rows):
    esc = lambda c: c.replace("|", "\\|")
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def paths(bench_dir):
    return (os.path.join(bench_dir, "results.md"), os.path.join(bench_dir, "goals.tsv"))


def emit(bench_dir, title, head, rows, goal_col, ratio_col):
    """Print the table, append it to results.md, record its goal rows."""
    md, goals = paths(bench_dir)
    head = head + ["mark"]
    marked = []
    for r in rows:
        mark = check(r[goal_col], r[1], r[ratio_col])
        marked.append(r + [mark])
    print()
    print("== " + title)
    print(text_table(head, marked, left=(0, goal_col)))
    with open(md, "a") as f:
        f.write("\n## %s\n\n%s\n" % (title, md_table(head, marked)))
    with open(goals, "a") as f:
        for r in marked:
            if r[-1]:
                f.write("\t".join([title, r[0], r[1], r[ratio_col], r[goal_col], r[-1]]) + "\n")


def cmd_init(bench_dir, header):
    md, goals = paths(bench_dir)
    os.makedirs(bench_dir, exist_ok=True)
    with open(md, "w") as f:
        f.write("# hermit benchmarks\n\n%s\n\nSummary of the goals and the chart: at the end.\n"
                % header)
    open(goals, "w").close()


def cmd_rows(bench_dir, title, tsv):
    rows = [l.rstrip("\n").split("\t") for l in open(tsv) if l.strip()]
    emit(bench_dir, title, ["name", "value", "baseline", "ratio", "goal"], rows, 4, 3)


def cmd_timing(bench_dir, title, base, tsv, goal_args):
    goals = dict(a.split("=", 1) for a in goal_args)
    rows = [l.rstrip("\n").split("\t") for l in open(tsv) if l.strip()]
    med = {r[0]: float(r[1]) for r in rows}
    out = []
    for r in rows:
        ratio = "%.2fx" % (float(r[1]) / med[base]) if base in med and med[base] > 0 else "-"
        out.append([r[0], "%.2f ms" % float(r[1]), "%.2f" % float(r[2]), "%.2f" % float(r[3]),
                    r[4], ratio, goals.get(r[0], "-")])
    emit(bench_dir, title, ["name", "median", "p90 ms", "min ms", "n", "ratio vs " + (base or "-"),
                            "goal"], out, 6, 5)


def short_title(title):
    """A table's title up to its first ':' or ',' (the details are in its own table)."""
    return re.split(r"[:,(]", title)[0].strip()[:40]


def chart(bench_dir, rows):
    """results.png: one horizontal bar per ratio goal (green met, red missed) and the
    goal as a black tick; log scale, so 0.2x and 10x both read."""
    data = os.path.join(bench_dir, "chart.dat")
    svg = os.path.join(bench_dir, "results.png")
    pts = []
    for title, name, value, ratio, goal, mark in rows:
        g = GOAL_RE.match(goal)
        r = NUM_RE.match(ratio)
        if not g or (g.group(3) or "") != "x" or not r:
            continue
        # the row's own name must stay whole (which backend, which peer): the section
        # gives way first
        section = short_title(title)
        if len(section) > 22:
            section = section[:20] + ".."
        label = "%s: %s" % (section, name)
        if len(label) > 84:
            label = label[:81] + "..."
        pts.append((label, float(r.group(1)), float(g.group(2)), g.group(1), mark == "pass"))
    if not pts:
        return None
    with open(data, "w") as f:
        for i, (label, got, want, op, ok) in enumerate(reversed(pts)):
            f.write('%d\t%g\t%g\t%d\t"%s"\t"%s %g"\t%g\n' % (
                i, got, want, 1 if ok else 0, label.replace('"', "'"), op, want,
                max(got, want) * 1.1))
    lo = min(min(p[1], p[2]) for p in pts) / 1.6
    hi = max(max(p[1], p[2]) for p in pts) * 2.5
    height = 140 + 34 * len(pts)
    script = """
set terminal pngcairo size 1500,{height} font "sans,11" background rgb "white"
set output "{svg}"
set title "hermit vs its peers: measured ratio (bar: green = goal met, red = missed) and goal (black tick)"
set logscale x 10
set xrange [{lo}:{hi}]
set yrange [-0.7:{ymax}]
set xlabel "hermit / its peer (log scale; each row says which peer)"
set grid xtics
set ytics nomirror
set key off
set style fill solid 0.75 border -1
set lmargin 72
set arrow from 1, graph 0 to 1, graph 1 nohead dt 2 lc rgb "gray40"
plot "{data}" using (sqrt($2*{lo})):1:({lo}):2:($1-0.32):($1+0.32):($4 > 0 ? 0x2e9e44 : 0xd23c3c):ytic(5) \\
       with boxxyerror lc rgb variable, \\
     "{data}" using 3:1:(0):(0):($1-0.45):($1+0.45) with xyerrorbars pt -1 lw 3 lc rgb "black", \\
     "{data}" using 7:1:(sprintf("%.2fx (goal %s)", $2, strcol(6))) with labels left font "sans,10"
""".format(height=height, svg=svg, lo=lo, hi=hi, ymax=len(pts) - 0.3, data=data)
    gp = os.path.join(bench_dir, "chart.gp")
    with open(gp, "w") as f:
        f.write(script)
    try:
        subprocess.run(["gnuplot", gp], check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print("bench: no chart (gnuplot: %s; scripts/deps.sh installs it)" % e, file=sys.stderr)
        return None
    return svg


def cmd_finish(bench_dir):
    md, goals = paths(bench_dir)
    rows = [l.rstrip("\n").split("\t") for l in open(goals) if l.strip()]
    met = sum(1 for r in rows if r[5] == "pass")
    summary = [[short_title(r[0]), r[1], r[2], r[3], r[4], r[5]] for r in rows]
    head = ["benchmark", "row", "value", "ratio", "goal", "mark"]
    print()
    print("== goals: %d of %d met" % (met, len(rows)))
    print(text_table(head, summary, left=(0, 1, 4)))
    svg = chart(bench_dir, rows)
    with open(md, "a") as f:
        f.write("\n## Goals: %d of %d met\n\n%s\n" % (met, len(rows), md_table(head, summary)))
        if svg:
            f.write("\n![ratios against their goals](%s)\n" % os.path.basename(svg))
    print("\nbench: tables in %s%s" % (md, ", chart in " + svg if svg else ""))


def main(argv):
    cmd, bench_dir = argv[1], argv[2]
    if cmd == "init":
        cmd_init(bench_dir, argv[3])
    elif cmd == "rows":
        cmd_rows(bench_dir, argv[3], argv[4])
    elif cmd == "timing":
        cmd_timing(bench_dir, argv[3], argv[4], argv[5], argv[6:])
    elif cmd == "finish":
        cmd_finish(bench_dir)
    else:
        sys.exit("report.py: unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv)
