"""Pictures of the target graph: Graphviz dot and Mermaid text, svg/png through `dot`; stale targets highlighted."""

from __future__ import annotations


def to_dot(dag, labels, stale=frozenset()) -> str:
    lines = ["digraph buildml {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fillcolor="#e8f0fe"];']
    for label in labels:
        fill = ', fillcolor="#fde2e1"' if label in stale else ""
        lines.append(f'  "{label}" [label="{label}"{fill}];')
    chosen = set(labels)
    for a, b in sorted(dag.edges()):
        if a in chosen and b in chosen:
            lines.append(f'  "{a}" -> "{b}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(dag, labels, stale=frozenset()) -> str:
    ids = {label: f"n{i}" for i, label in enumerate(labels)}
    lines = ["graph LR"]
    for label, nid in ids.items():
        lines.append(f'  {nid}["{label}"]')
    for a, b in sorted(dag.edges()):
        if a in ids and b in ids:
            lines.append(f"  {ids[a]} --> {ids[b]}")
    if stale:
        lines.append("  classDef stale fill:#fde2e1,stroke:#c00")
        lines.append("  class " + ",".join(ids[l] for l in labels if l in stale) + " stale")
    return "\n".join(lines) + "\n"


DOT_HINT = "install Graphviz: apt-get install graphviz (macOS: brew install graphviz), or use --format dot|mermaid"


def to_image(dot_text: str, fmt: str) -> bytes:
    """Render dot text as svg or png bytes with Graphviz's `dot`."""
    import shutil
    import subprocess

    from buildml.errors import EnvironmentProblem

    dot = shutil.which("dot")
    if dot is None:
        raise EnvironmentProblem(f"--format {fmt} needs Graphviz's `dot` command, which is not on PATH", hint=DOT_HINT)
    proc = subprocess.run([dot, f"-T{fmt}"], input=dot_text.encode(), capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise EnvironmentProblem(f"Graphviz `dot -T{fmt}` failed: {proc.stderr.decode(errors='replace').strip()}",
                                 hint="check your Graphviz installation, or use --format dot")
    return proc.stdout
