"""The thesis' qualitative findings, checked on one run's summary.json.

The demo exists to show these effects (thesis Tables 2-5, 8 and 9 and section 6.1), so they are stated
as checks with the numbers behind them: the README's findings list, the seed study and the tests all
read them from here, never from hand-copied figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

IN_DOMAIN_AUC_MIN = 0.75  # source A on its own domain must have learned something (thesis Table 3: 0.881)


@dataclass(frozen=True)
class Finding:
    key: str
    claim: str
    holds: bool | None  # None: a row it needs is missing from the run
    evidence: str


def _auc(models: dict[str, Any], key: str) -> float | None:
    entry = models.get(key)
    return None if entry is None else float(entry["auc"])


def findings(summary: dict[str, Any]) -> list[Finding]:
    """Every finding the demo must show, in the thesis' order."""
    models = summary["models"]
    auc = {key: _auc(models, key) for key in
           ("a-film", "a-ffdm", "ab-ffdm", "a-hospital", "baseline", "finetune-config1", "finetune-config2")}

    def check(key: str, claim: str, needs: tuple[str, ...], test, evidence) -> Finding:
        if any(name not in models for name in needs):
            return Finding(key, claim, None, f"missing: {', '.join(n for n in needs if n not in models)}")
        return Finding(key, claim, bool(test()), evidence())

    a = cast(dict[str, float], auc)  # check() evaluates a claim only when every model it needs is present
    out = [
        check("a-in-domain", f"source A in domain (film test) AUC >= {IN_DOMAIN_AUC_MIN}", ("a-film",),
              lambda: a["a-film"] >= IN_DOMAIN_AUC_MIN, lambda: f"{a['a-film']:.3f}"),
        check("a-loses-ffdm", "source A loses AUC on ffdm", ("a-film", "a-ffdm"),
              lambda: a["a-ffdm"] < a["a-film"], lambda: f"{a['a-film']:.3f} -> {a['a-ffdm']:.3f}"),
        check("a-loses-hospital", "source A loses AUC on hospital", ("a-film", "a-hospital"),
              lambda: a["a-hospital"] < a["a-film"], lambda: f"{a['a-film']:.3f} -> {a['a-hospital']:.3f}"),
        check("ab-beats-a-ffdm", "A+B does better on ffdm than A", ("a-ffdm", "ab-ffdm"),
              lambda: a["ab-ffdm"] > a["a-ffdm"], lambda: f"{a['a-ffdm']:.3f} -> {a['ab-ffdm']:.3f}"),
        check("baseline-drops", "the A+B baseline drops out of domain (ffdm -> hospital)", ("ab-ffdm", "baseline"),
              lambda: a["baseline"] < a["ab-ffdm"], lambda: f"{a['ab-ffdm']:.3f} -> {a['baseline']:.3f}"),
    ]
    for config in (1, 2):
        key = f"finetune-config{config}"
        claim = f"fine-tuning config {config} beats the baseline on hospital"
        out.append(check(f"config{config}-beats-baseline", claim, ("baseline", key),
                         lambda key=key: a[key] > a["baseline"],
                         lambda key=key: f"{a['baseline']:.3f} -> {a[key]:.3f}"))
    out.append(_radiomics(models))
    return out


def _radiomics(models: dict[str, Any]) -> Finding:
    claim = "radiomics differs from the baseline in sensitivity/specificity"
    if "baseline" not in models or "baseline+radiomics" not in models:
        return Finding("radiomics-differs", claim, None, "missing: baseline or baseline+radiomics")
    base, radio = models["baseline"], models["baseline+radiomics"]
    differs = (base["sensitivity"], base["specificity"]) != (radio["sensitivity"], radio["specificity"])
    evidence = (f"sens {base['sensitivity']:.3f} -> {radio['sensitivity']:.3f}, "
                f"spec {base['specificity']:.3f} -> {radio['specificity']:.3f}")
    return Finding("radiomics-differs", claim, differs, evidence)
