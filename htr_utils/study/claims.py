"""The paper's claims as data: each claim's statement, what the paper reports, and its verdict rule, written once.

Each notebook shows its claim's card (:func:`htr_utils.study.outputs.show_claim`) before any
computation, and :func:`htr_utils.study.report.write_verdict` copies the same texts into
``verdict.json``, so a rule cannot say one thing in the notebook and another in the verdict.
A rule changed after a result was seen must say so in its text and keep the earlier version.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    id: str              # "C0" ... "C7" (C6a / C6b: the two halves of C6)
    notebook: str        # the notebook's stem
    title: str
    summary: str         # one line, for tables and verdict.json
    statement: str       # the claim in full (markdown)
    paper_reports: str   # what the paper shows for it (markdown)
    paper_summary: str   # one line
    rates: str           # the current rule's calibrated rates, one line: "false R x; false N y; power z at <effect>"
    rule: str            # the verdict rule, fixed before the results (markdown)

    def card(self) -> str:
        """Markdown shown at the top of the claim's notebook."""
        return (f"**Claim ({self.id}).** {self.statement}\n\n**What the paper reports.** {self.paper_reports}\n\n"
                f"### Verdict rule (fixed before the results)\n\n{self.rule}\n\n"
                f"**Calibrated rates of the current rule** (false R / false N / power). {self.rates}")


CLAIMS: dict[str, Claim] = {}


def _text(block: str) -> str:
    return textwrap.dedent(block).strip()


def _line(block: str) -> str:
    """A one-line text (for table cells) written over several source lines."""
    return " ".join(block.split())


def _add(claim: Claim) -> None:
    CLAIMS[claim.id] = claim


_add(Claim(
    id='C0', notebook='00_routines_check',
    title='00 — Routines check: the Hessian routines are exact',
    summary='the routines agree with dense linear algebra',
    statement=_text("""
    Every numerical routine of `htr_utils` that the other notebooks rely on agrees with
    dense linear algebra: curvature–vector products (Hessian, Gauss–Newton G, residual H = Hess − G,
    on all parameters and on one layer's block), Lanczos, top eigenvalues, Hutchinson traces and
    stochastic Lanczos quadrature (SLQ) densities. This is not a claim of the paper but the
    precondition for trusting every later figure.
    """),
    paper_reports=_text("""
    Nothing: this is not a claim of the paper but the precondition for trusting every later figure.
    The project requires products to agree with dense float64 linear algebra to 1e-10 relative,
    Lanczos run to the dimension to return the exact eigenvalues, Hutchinson to lie within a few
    standard errors of the exact trace, and SLQ to be close to the exact spectrum in W1.
    """),
    paper_summary=_text("""
    not a paper claim: the design requires products to 1e-10, exact Lanczos at num_iters = dim, Hutchinson within a few standard errors, SLQ close in W1
    """),
    rates=_line("""
    false R not calibrated; false N not calibrated; power not calibrated (fixed numerical tolerances: 1e-10
    relative, 1e-8·‖Hess‖, 1e-6·‖A‖, 4 SE, 5 % W1)
    """),
    rule=_text("""
    *Reproduced* if all of the following hold, *not reproduced* otherwise:

    1. relative error ‖Op·V − A·V‖ / ‖A·V‖ < 1e-10 for 8 random vectors, for Hessian, GGN and
       residual on all parameters and for the Hessian block of layer `fc1`;
    2. Lanczos with `num_iters = dim` recovers the exact spectrum: every exact eigenvalue lies
       within 1e-8·‖Hess‖ of a Ritz value and every Ritz value within 1e-8·‖Hess‖ of an exact
       eigenvalue (repeated eigenvalues are found once);
    3. `top_eigenvalues(op, 10)` matches the 10 largest exact eigenvalues of Hess and of G to
       1e-6·‖A‖ (its convergence tolerance);
    4. Hutchinson with 200 Rademacher probes is within 4 standard errors of the exact trace, for
       Hess and G;
    5. the SLQ quadrature measure (128 iterations, 4 probes) is within 5 % of the spectral range
       of the exact spectral measure in Wasserstein-1 distance, for Hess and G.
    """),
))

_add(Claim(
    id='C1', notebook='01_full_spectrum',
    title='01 — The full Hessian spectrum: a bulk near zero and about C outliers',
    summary='the full Hessian spectrum is a bulk near zero plus about C outliers',
    statement=_text("""
    The eigenvalue spectrum of the full network's Hessian is a bulk near zero plus
    about C isolated large eigenvalues (outliers), where C is the number of classes.
    """),
    paper_reports=_text("""
    Spectral densities of the Hessian of LeNet, VGG11_bn and ResNet18
    trained on MNIST, FashionMNIST and CIFAR10 (C = 10), estimated by stochastic Lanczos quadrature
    (SLQ) and drawn on a log scale: nearly all of the spectral mass sits at λ ≈ 0, and about C
    eigenvalues stand apart from it.
    """),
    paper_summary=_text("""
    log-scale SLQ densities of LeNet / VGG11_bn / ResNet18 on MNIST, FashionMNIST, CIFAR10: mass concentrated at zero, about C = 10 isolated large eigenvalues
    """),
    rates=_line("""
    false R 0 of 200 in every false scenario (< 1.5 %); false N 0 %; power 99.5 % per network (about 98.5 % for
    the three) at every network's C class directions down to edge / 2 (S2, mix 0.05; VGG11_bn and LeNet-GELU:
    the earlier design's fit)
    """),
    rule=_text("""
    **Current rule: PROTOCOL.md spectra amendment S2 (2026-12-07, before any cpu run or reading; S4 beside)**,
    on the issue-30 amendment's count: *the top-C subspace is class directions*. At the last epoch, on the most
    examples per class read (100; VGG11_bn 30, budget amendment), k_cls is the number of the top 2C Hessian Ritz
    vectors with more than 60 % of their squared norm in the span of the C class means **and** a Ritz value above
    **λ_C+1(G_within)**, the edge of G_within's continuous part (up to C within-class outliers set aside; not
    λ_max(G_within), which one strong within-class direction sets).

    * per network: **reproduced** if C − 2 ≤ k_cls ≤ C + 2; **not reproduced** if k_cls < C/2;
      **inconclusive** otherwise (the issue-30 "k_cls > 2C" branch is dropped: 2C orthonormal vectors hold at
      most C of mass in the span, so it could never fire);
    * **LeNet, LeNet-GELU and VGG11_bn all decide**, "all_of": reproduced if every network is, not reproduced if
      any is, else inconclusive.

    Calibrated (S2: spiked models fitted to the measured G_within, class directions mixed 5 % out of the read
    span): false reproduced 0 of 200 in every false scenario (C − 3, C/2 or no class directions; < 1.5 %, 95 %
    upper limit); false not reproduced 0 %; power 99.5 % per network (about 98.5 % for the three) with every
    network's C class directions down to half the within-class edge, 34–56 % at a quarter of it. VGG11_bn's
    and LeNet-GELU's rates come from fits to the earlier design's readings (100 per class, 128 steps, epoch 50;
    S4). Reported apart, never deciding: *C eigenvalues clear the strongest within-class direction* (the count
    above λ_max(G_within)), and the issue-30 count without the edge.

    **Superseded rules** (kept as history, shown beside, never deciding; newest first).

    *Superseded rule* (replaced by spectra amendment S2 of 2026-12-07, written after a referee read and before any cpu run or reading; PROTOCOL.md, C1 amendment of issue 30, fixed before any
    re-reading): *the top-C subspace is class directions*, which one strong within-class direction
    cannot mask. At the **last epoch on 100 examples per class**, k_cls is the number of the top 2C
    Hessian Ritz vectors with more than 60 % of their squared norm in the span of the C class means.

    * per network: **reproduced** if C − 2 ≤ k_cls ≤ C + 2; **not reproduced** if k_cls < C/2 or
      k_cls > 2C; **inconclusive** otherwise;
    * across LeNet, LeNet-GELU and VGG11_bn: reproduced if every network is, not reproduced if any
      is, else inconclusive.

    Calibrated in spiked models whose anisotropic within-class spectrum is fitted to every committed
    block: false reproduced 0 / 200 in every false scenario (C ± 3 class directions, or none); false
    not reproduced 0 %; power 100 % per network with class directions down to half the within-class
    edge, masked by a strong within-class direction or not (the earlier count: 0–46 %, 0 % masked);
    44–71 % at a quarter of the edge. Reported apart, never deciding: *C eigenvalues clear the
    strongest within-class direction* (the earlier count k, below).

    *Earlier rule* (PROTOCOL.md before issue 30; the rule changed after issue 30's referee read;
    both shown): the Gauss–Newton matrix G on the curvature examples is split
    exactly into class, cross-class and within-class parts (after Papyan, 2020); the **bulk edge** is
    λ_max(G_within) and k is the number of Hessian eigenvalues (Lanczos Ritz values) above it, per
    network, at the last epoch on 100 examples per class; the same thresholds and combination as
    above. One within-class direction stronger than the class outliers hides them all (k ≤ 1), and
    the committed networks look like that case. Secondary (never decide): k on 10 examples per class
    and at every class epoch beside the training loss, the overlap of the top-C eigenvectors with the
    class means.

    *Earliest rule* (before the protocol; shown, does not decide): the largest ratio gap λ_k/λ_{k+1} among the top 2C Ritz
    values at |k − C| ≤ 2 for every run. It was captured by the top two eigenvalues and jumped across
    epochs, so it measured the gap pattern, not a bulk edge.
    """),
))

_add(Claim(
    id='C2', notebook='02_gauss_newton',
    title='02 — Gauss–Newton decomposition: the outliers come from G, H makes up the bulk',
    summary='the spectrum of G is close to that of Hess (outliers from G); H contributes the bulk',
    statement=_text("""
    Write Hess = G + H, with G = mean_i J_iᵀ (∇²_f ℓ_i) J_i the Gauss–Newton matrix
    (J_i: Jacobian of the logits) and H the residual weighted by the loss gradient w.r.t. the logits.
    The spectrum of G is close to that of Hess — the outliers come from G — while H contributes
    only to the bulk near zero; this is seen at several epochs of training.
    """),
    paper_reports=_text("""
    The SLQ densities of Hess, G and H of the full network overlaid at
    several epochs: G's density follows Hess's, outliers included; H's spectrum is a bulk around zero.
    """),
    paper_summary=_text("""
    Hess, G and H densities overlaid at several epochs: G follows Hess including the outliers, H is a bulk around zero
    """),
    rates=_line("""
    false R ≤ 0.9 % (a deciding network at a(G) 0.20; ≤ 4.0 % on 0.10); false N 0.1 % iid / 0.0 % trend (3.1 %
    at medians 0.05); power 59 % iid / 13 % trend at both networks' median a(G) = 0.02 (S1; the 10 % criterion
    is uncontrolled; LeNet-GELU never calibrated)
    """),
    rule=_text("""
    **Current rule: PROTOCOL.md spectra amendment S1 (2026-12-07, before any cpu run or reading; S4 beside).**
    **The 10 % criterion is uncontrolled**: no honest control exists within the recorded quantities, so nothing
    checks that it discriminates, and a "reproduced" reads as uncontrolled. One verdict per network. At every
    epoch ≥ 1 where G was recorded, a(G) = max_{k ≤ C} |λ_k(G) − λ_k(Hess)| / λ_k(Hess) on the top-C Ritz values
    (full network); a reading passes if a(G) ≤ 0.10.

    * per network: **inconclusive** if its restart floor (two independent Lanczos runs of Hess) is not below
      0.10; otherwise, with s_G its share of passing readings, **reproduced** if s_G ≥ 0.75, **not reproduced**
      if s_G ≤ 0.25, else inconclusive;
    * the paper's ReLU networks, **LeNet and VGG11_bn, decide**, "all_of": reproduced if both are, not
      reproduced if either is, else inconclusive. **LeNet-GELU is an extension** ("fails for a smooth
      activation" if not reproduced) and never decides.

    The far-epoch disagreement (G of the farthest epoch against this epoch's Hess) is printed, labelled "shown,
    no longer a control" (it cannot pass). On piecewise-linear networks tr(H) = Σ_l tr(H_l) = 0 exactly
    (tested), so "H is a bulk around zero" is partly an identity there. Calibrated without the control (S1; two
    models fitted to the committed a(G), LeNet 7 readings, VGG11_bn 3): false reproduced ≤ 0.9 % with a deciding
    network at twice the threshold (≤ 4.0 % with one on it); false not reproduced 0.1 % (iid) / 0.0 % (trend)
    at both medians 0.02 (≤ 3.1 % at 0.05); power 59 % (iid) / 13 % (trend) at both networks' median
    a(G) = 0.02, the stated effect. The LeNet-GELU extension is not calibrated.

    **Superseded rules** (kept as history, shown beside, never deciding; newest first).

    *Superseded rule* (replaced by spectra amendment S1 of 2026-12-07, written after a referee read and before any cpu run or reading; PROTOCOL.md, C2 amendment of issue 30, fixed before any
    re-reading): a verdict per network, and a control that could pass. At every epoch ≥ 1 where G
    was recorded, a(G) = max_{k ≤ C} |λ_k(G) − λ_k(Hess)| / λ_k(Hess) on the top-C Ritz values (full
    network); a reading passes if a(G) ≤ 0.10. Control: the same disagreement of G at the epoch
    farthest from this one against this epoch's Hess.

    * per network: **inconclusive** if its control passes in more than 25 % of its readings or its
      restart floor (two independent Lanczos runs of Hess) is not below 0.10; otherwise
      **reproduced** if ≥ 75 % of its readings pass, **not reproduced** if ≤ 25 % do, else
      inconclusive;
    * the paper's ReLU networks, LeNet and VGG11_bn, decide: reproduced if both are, not reproduced
      if either is, else inconclusive. **LeNet-GELU is an extension** ("fails for a smooth
      activation" if not reproduced) and never decides.

    On piecewise-linear networks tr(H) = Σ_l tr(H_l) = 0 exactly (tested), so "H is a bulk around
    zero" is partly an identity there. Calibrated in two models fitted to the committed a(G): false
    reproduced ≤ 0.9 % with one network at twice the threshold (≤ 4.0 % with one on the threshold);
    false not reproduced 3.1 % at median a(G) 0.05; power 59 % at median a(G) 0.02 in both networks
    (68 % / 47 % at the measured medians, iid / trend model).

    *Earlier rule* (PROTOCOL.md before issue 30; the rule changed after issue 30's referee read;
    both shown): at every epoch ≥ 1 where G and H were recorded, a(X) = max_{k ≤ C} |λ_k(X) − λ_k(Hess)| / λ_k(Hess) on the top-C Ritz values (full
    network). A reading passes if a(G) ≤ 0.10.

    * **reproduced** if ≥ 75 % of (network, epoch) readings pass; **not reproduced** if ≤ 25 % do;
      **inconclusive** otherwise — and also inconclusive if the same criterion with H in place of G
      passes in more than 25 % of readings (it would not discriminate) or if the noise floor (two
      independent Lanczos runs of Hess) reaches 0.10.

    Pooled over all three networks (LeNet-GELU included, which capped the share at 10/17), with H as
    the control (a(H) 0.69–0.99, it could not pass). Secondary: W1 between smoothed densities, the
    counts above H's edge max|λ(H)|.

    *Earliest rule* (before the protocol; shown, does not decide): top-C within 10 %, W1(Hess, G) < 5 % of the range and
    |λ(H)| < 10 % of λ_max. Its W1 criterion could not fail: W1(Hess, H) was 0.45 % of the range too.
    """),
))

_add(Claim(
    id='C3', notebook='03_layer_spectra',
    title='03 — Layer Hessians: about C outliers in every layer, and G_l ≈ Hess_l',
    summary='every layer Hessian shows about C outliers, and G_l ≈ Hess_l',
    statement=_text("""
    Every layer Hessian Hess_l — the diagonal block of Hess for the weight tensor of one
    Conv2d/Linear layer — also shows about C outliers, and G_l ≈ Hess_l: the layerwise geometry
    mirrors the full network's.
    """),
    paper_reports=_text("""
    SLQ densities of every layer's Hessian block for LeNet, VGG11_bn and
    ResNet18, each with a bulk near zero and a few outliers; and the Gauss–Newton decomposition per
    layer with G_l matching Hess_l.
    """),
    paper_summary=_text("""
    layerwise SLQ densities of LeNet / VGG11_bn / ResNet18 with a bulk near zero and a few outliers per layer; G_l matching Hess_l
    """),
    rates=_line("""
    (a) false R 0; false N 0; power 100 % at the weakest class direction at edge / 2 in every layer (post hoc,
    fitted to the judged run; issue-30 pre-run: 0 % (< 3 %), 0 %, 100 %); (b) never calibrated
    """),
    rule=_text("""
    **Current rule: PROTOCOL.md C3 amendment of issue 30 with spectra amendment S2's count and codes for (a)
    (2026-12-07, before any cpu run or reading; S4 beside).** (a) counts class directions, as C1 does. For every
    layer block of every network (LeNet, LeNet-GELU, VGG11_bn; output layers included), k_cls,l = the number of
    the block's own top 2C Hessian Ritz vectors with more than 60 % of their mass in the span of the class means
    restricted to the layer's weights **and** a Ritz value above the block's λ_C+1(G_l,within), last epoch, most
    examples per class read; s_a = the share of blocks with C − 2 ≤ k_cls,l ≤ C + 2. (b) For the network with
    smooth activations only (LeNet-GELU; with ReLU, max-pooling and eval BatchNorm H_l = 0 and G_l = Hess_l
    identically), every layer but the output layer (linear in its own weights: H_l = 0 for any activation), s_b
    = the share of (layer, epoch ≥ 1 with G) readings with top-C disagreement a_l(G_l) ≤ 0.10.

    * **reproduced** if s_a ≥ 0.75 and s_b ≥ 0.75; **not reproduced** if s_a ≤ 0.25 or s_b ≤ 0.25;
      **inconclusive** otherwise.

    (a)'s rates are **post hoc** (S4): notebook 03 fits them to the judged run's own layer readings (unmixed) and
    applies the S2 count: false reproduced 0 %, false not reproduced 0 %, power 100 % with the weakest class
    direction at half the edge in every layer. Pre-run (issue 30, every committed block in its own fitted
    model): false reproduced 0 % (< 3 %, 95 % upper limit), false not reproduced 0 %, power 100 % at half the
    edge (41 % at a quarter). (b) was never calibrated (PROTOCOL.md says it "keeps its earlier calibration";
    none exists). Reported apart, never deciding: the share of layers with about C eigenvalues above their
    strongest within-class direction.

    **Superseded rules** (kept as history, shown beside, never deciding; newest first).

    *Superseded rule* (replaced by spectra amendment S2 of 2026-12-07 for (a), written after a referee read and before any cpu run or reading; PROTOCOL.md, C3 amendment of issue 30, fixed before any
    re-reading): (a) counts class directions, as C1 does. For every layer of every network, k_cls,l =
    the number of the block's own top 2C Hessian Ritz vectors with more than 60 % of their mass in
    the span of the class means restricted to the layer's weights, last epoch, 100 examples per
    class; share s_a of layers with C − 2 ≤ k_cls,l ≤ C + 2. (b) unchanged (below). Calibrated on
    every one of the 19 layer blocks in its own fitted anisotropic model: false reproduced 0 %, false
    not reproduced 0 %, power of (a) 100 % with the weakest class direction at half the edge (41 % at
    a quarter). Reported apart, never deciding: the share of layers with about C eigenvalues above
    their strongest within-class direction.

    *Earlier rule* (PROTOCOL.md before issue 30; the rule changed after issue 30's referee read;
    both shown): (a) for every layer of every network, k_l =
    Hess_l's eigenvalues above the layer's own bulk edge λ_max(G_l,within), last epoch, 100 examples
    per class; share s_a of layers with C − 2 ≤ k_l ≤ C + 2. (b) For the network with smooth
    activations only (with ReLU, max-pooling and eval BatchNorm H_l = 0 and G_l = Hess_l identically),
    share s_b of (layer, epoch) readings with top-C disagreement a_l(G_l) ≤ 0.10.

    * **reproduced** if s_a ≥ 0.75 and s_b ≥ 0.75; **not reproduced** if s_a ≤ 0.25 or s_b ≤ 0.25;
      **inconclusive** otherwise.

    *Earliest rule* (before the protocol; shown, does not decide): the largest-gap count per layer, ≥ 75 % of layers at
    |k − C| ≤ 2; G_l ≈ Hess_l was checked on ReLU networks, where it is an identity.
    """),
))

_add(Claim(
    id='C4', notebook='04_layer_vs_full',
    title="04 — Layer spectra against the full Hessian's: are the middle layers the closest? (C4)",
    summary=_text("""
    the middle layers' Hessian spectra are the closest to the full Hessian's (KL and Wasserstein, distance vs normalised depth minimal in the middle)
    """),
    statement=_text("""
    Comparing each layer's Hessian spectrum with the full network's, as probability
    distributions, by KL divergence and Wasserstein distance, the *middle* layers are the most similar
    to the full Hessian: the distance against normalised depth is U-shaped, smallest in the middle,
    across models and data sets.
    """),
    paper_reports=_text("""
    The distance of each layer's spectrum to the full spectrum, normalised
    by its maximum per model, against normalised depth: at one epoch per model / data set and summed
    over epochs, with its minimum in the middle layers. Two weaknesses of the published analysis are
    addressed here: the epoch of the per-model figure (the "peak epoch") was picked by
    hand, and the public code's distance compares two arrays of transformed *density values*, not two
    distributions over the eigenvalue axis.
    """),
    paper_summary=_text("""
    distance vs normalised depth U-shaped / minimal in the middle layers, across models and data sets (at a hand-picked epoch per model, and summed over epochs)
    """),
    rates=_line("""
    false R ≤ 5.0 % at any σ; false N ≤ 4.4 %; power 97 % / 74 % at residual σ 0.2 / 0.3 at end-to-centre ratio
    ρ = 3 (am. 6; decides only where the power at the readings' σ̂ is ≥ 50 %)
    """),
    rule=_text("""
    **Current rule: PROTOCOL.md C4 amendment 6 (issue 30, 2026-12-07, before any cpu C4 reading).** A depth
    regression over the real layers on the paper's **normalised W1**: each pooled SLQ measure (layer; full
    network, pool A) divided by its own largest |eigenvalue|, then exact W1 on the line (5 probes, 32 Lanczos
    steps; LeNet epochs 10, 30, 50, VGG11_bn 15, 30). Layer i of L has normalised depth d_i = (i + 0.5) / L; the
    **symmetric middle** is 0.25 ≤ d_i ≤ 0.75. Over the 14 real layers of **LeNet and VGG11_bn (they decide)**,
    least squares of the layer's log normalised W1 averaged over epochs: y = α_net + b log(size share) +
    c |d − 1/2| + e; σ̂ = the regression's own **residual sd** (10 df), se = ĉ's standard error. Stated effect:
    an end-to-centre ratio **ρ = 3** (c₁ = 2 ln 3).

    * **inconclusive (underpowered)** if the power at ρ = 3 at σ̂, P(t₁₀(ncp = c₁ / se) > t₀.₉₅,₁₀), is below
      50 % (σ̂ above about 0.42): the design cannot decide at that noise;
    * else **reproduced** if p_R = P(t₁₀ ≥ ĉ / se) < 0.05 (U-shape, minimum in the middle);
    * **not reproduced** if p_N = P(t₁₀ ≤ (ĉ − 2 ln 3) / se) < 0.05 (a ratio of 3 is excluded);
    * **inconclusive** otherwise.

    The measured text prints the decision region for the estimated ratio exp(ĉ/2) (reproduced if
    ≥ exp(t₀.₉₅ se / 2), not reproduced if ≤ exp((c₁ − t₀.₉₅ se) / 2)), the power at σ̂ and the probes' own share
    of the noise. Calibrated (ĉ ~ N(c, se²), σ̂² ~ σ² χ²₁₀ / 10, on the real layers): false reproduced ≤ 5.0 % at
    every σ; false not reproduced ≤ 4.4 % at ρ = 3; power 97 % / 74 % at σ = 0.2 / 0.3, under 50 % from
    σ ≈ 0.38 (at amendment 5's assumed σ = 0.63 the gate trips 92 % of the time). Beside it, never deciding:
    amendment 5's raw-W1 fit and verdict, each reading's closest layer, the 32-vs-64 Lanczos-step check on
    VGG11_bn's last reading; LeNet-GELU is an extension with no C4 reading in the cpu profile.

    **Superseded rules** (kept as history, shown beside, never deciding; newest first).

    *Superseded rule* (replaced by C4 amendment 6 of 2026-12-07, written after a referee read and before any cpu C4 reading; its raw-W1 fit and verdict are printed beside; PROTOCOL.md, C4 amendment 5, fixed before any C4
    reading): a depth regression over the real layers. Layer i of L has normalised depth d_i =
    (i + 0.5) / L; the **symmetric middle** is 0.25 ≤ d_i ≤ 0.75 (LeNet conv2, fc1, fc2; VGG11_bn
    layers 2–6). Distance: raw W1 on the eigenvalue axis between the layer's pooled SLQ atoms and
    the full Hessian's (5 probes, 32 Lanczos steps, LeNet epochs 10, 30, 50, VGG11_bn 15, 30). Over
    the 14 real layers of LeNet and VGG11_bn, least squares of the layer's log W1 averaged over
    epochs: y = α_net + b log(size share) + c |d − 1/2| + e.

    * **reproduced** if p_R = P(t₁₀ ≥ ĉ / se) < 0.05 (U-shape, minimum in the middle);
    * **not reproduced** if p_N = P(t₁₀ ≤ (ĉ − 2 ln 6) / se) < 0.05 (an end-to-centre ratio of 6,
      the stated effect, is excluded);
    * **inconclusive** otherwise.

    Exact for iid Gaussian e: false reproduced 5.0 % at no depth effect, false not reproduced 5.0 %
    at the stated effect, power 56 % at ratio 6 with a layer spread σ_layer = 0.6 (40 % at ratio 4);
    if the residual sd exceeds 0.70 the verdict says the power was under 50 %. Beside it, never
    deciding: the paper's normalised W1 (each measure divided by its largest |eigenvalue|) with the
    same regression, each reading's closest layer, the 32-vs-64 Lanczos-step check on VGG11_bn's last
    reading (64 steps everywhere if it moves log W1 by more than 0.3), and LeNet-GELU as an extension.

    *Earlier rule* (PROTOCOL.md before issue 30; the rule changed after issue 30's referee read;
    both shown). At five epochs per network, five SLQ runs
    per block; a block's spectrum is its pooled **unsmoothed** quadrature atoms; W1 on the eigenvalue
    axis between each layer and the full Hessian (pool A). Noise floor: W1 between pool A and an
    independent pool B of the full Hessian. A reading is *middle* if the closest middle-half layer
    (L/4 ≤ i < 3L/4) beats the closest outer layer by more than the floor, *outer* if the reverse,
    else *tie*.

    Size-matched null (amendments 2-4, before any C4 reading was looked at): at every reading each
    layer also gets 5 random parameter subsets of its size, read the same way; p_mid / p_out = how
    often one subset per layer, drawn at random, reads *middle* / *outer* (size alone).

    * **reproduced** if every network's readings are mostly *middle* **and** the bound
      B = min over networks of min(1, Σ p_mid / majority count) is below 0.05, with p_mid the upper
      95 % bootstrap limit of each reading's null rate (Markov's bound on "mostly middle" under the
      null, valid whatever the dependence among readings and networks; amendment 4);
    * **not reproduced** likewise with *outer* and p_out;
    * **inconclusive** otherwise; when B ≥ 0.05 the verdict says the design cannot reproduce C4 (size
      alone predicts the middle).

    Calibration in a Gauss–Newton model with no depth effect (150 readings per network, 4000
    studies): false *reproduced* 0 % at no noise floor (vacuous: the size null then always reads
    *middle*), 0 % (independent readings) to 3.3 % (dependent) at a floor of 0.1 × the subsets'
    W1; the first rule (fixed chance rate = the share of middle layers, shown beside) says
    *reproduced* 73–88 % at no floor and 2–10 % at that floor, because the largest layers (LeNet's
    fc1, 78 % of the weights) sit in the middle half. No power is claimed (PROTOCOL.md, amendments 3-4).
    Secondary: KL at one common width, each layer against its own size-matched subsets, the authors'
    density-value variant.

    *Earliest rule* (before the protocol; shown, does not decide): distances between Gaussian-smoothed densities, each
    with its own width, summed over epochs. Those distances were set by the two smoothing widths and
    picked the layer whose λ_max is nearest the full one.
    """),
))

_add(Claim(
    id='C5', notebook='05_trace_trends',
    title='05 — Trace and largest eigenvalue of the Hessian during training (C5)',
    summary=_text("""
    the largest eigenvalue and the trace of the Hessian, full and layerwise, decrease as training progresses
    """),
    statement=_text("""
    The largest eigenvalue and the trace of the Hessian, of the full network and of
    every layer, decrease as training progresses: training converges to flatter regions.
    """),
    paper_reports=_text("""
    Curves of the trace and of the top eigenvalue against epochs that fall
    over training, for the full Hessian and the layer Hessians.
    """),
    paper_summary='trace and top eigenvalue of the full and layer Hessians fall over the training epochs',
    rates=_line("""
    false R ≤ 4.7 % (one flat series, φ 0.5; 0 with no trend anywhere); false N 0 % at E[τ] = −0.7 (4.1 % with
    no trend anywhere); power 30 % at E[τ] = −0.7 in every series (S3, at 14 / 7 points; notebook 05 at the
    run's 11 / 7: 25 %)
    """),
    rule=_text("""
    **Current rule: PROTOCOL.md spectra amendment S3 with S4's epochs (2026-12-07, before any cpu run or
    reading).** Per network, λ_max and the Hutchinson trace of the full Hessian at its curvature records from
    epoch 1 on: LeNet 1, 5, 10, 15, …, 50 (11 points, evenly spaced after epoch 1), VGG11_bn 3, 6, 10, 15, 20, 25,
    30 (7), the records treated as equally spaced. Kendall's τ against the epoch with one-sided p-values (p↓ and
    p↑, both reported) from the null of Kendall's D for AR(1) noise at φ = max(0.5, the series' own lag-1
    autocorrelation r₁), capped at 0.9 and rounded up to 0.05 (Monte Carlo table of 20 000 series). **The four
    series of the paper's ReLU networks (λ_max and trace of LeNet and VGG11_bn) decide**:

    * **reproduced** if every deciding series decreases with p↓ < 0.05;
    * **not reproduced** if any increases with p↑ < 0.05 / 4;
    * **inconclusive** otherwise.

    LeNet-GELU is an extension: its 4 points are below the 5-point minimum, so its series are shown with τ and
    the iid p, untested, never deciding. Calibrated (S3, at 14 / 7 points; notebook 05 recomputes the rates at
    the run's own lengths and prints them before the verdict): false reproduced ≤ 4.7 % (one series with no
    trend, φ ≤ 0.5; 0 % with no trend anywhere); false not reproduced 4.1 % with no trend anywhere at φ = 0.5,
    0 % when every series decreases; power 30 % at E[τ] = −0.7 in every series (66 % at −0.8): VGG11_bn's 7
    points limit it, so a weak decrease reads inconclusive. The rates hold for φ ≤ 0.5 (at 0.6 false not
    reproduced is 6.8 %).

    **Superseded rules** (kept as history, shown beside, never deciding; newest first).

    *Superseded rule* (replaced by spectra amendments S3 and S4 of 2026-12-07, written after a referee read and before any cpu run or reading; PROTOCOL.md, C5 amendment of issue 30, fixed before any
    re-reading): a trend test robust to serial dependence. The series and codes below are unchanged;
    the one-sided p-values (p↓ and p↑, both reported) come from the null of Kendall's D for AR(1)
    noise at φ = max(0.5, the series' own lag-1 autocorrelation r₁) (Monte Carlo table of 20 000
    series). Calibrated: false reproduced ≤ 4.4 % (one flat series, φ 0.5; 0 % with no trend
    anywhere); false not reproduced 4.7 % with no trend at φ 0.5 (the earlier rule: 33 %), about 0
    when every series decreases; power 75 % at E[τ] = −0.7 in every series (21 % at −0.5). The rates
    hold for φ ≤ 0.5 (at 0.6 false not reproduced is 7.9 %).

    *Earlier rule* (PROTOCOL.md before issue 30; the rule changed after issue 30's referee read;
    both shown): per network, λ_max and the Hutchinson trace
    of the full Hessian at every curvature epoch from the first trained one to the last (at least
    5 points), Kendall's τ against the epoch with exact one-sided p-values.

    * **reproduced** if all six series (2 quantities × 3 networks) decrease with p < 0.05;
    * **not reproduced** if any increases with p < 0.05 / 6;
    * **inconclusive** otherwise.

    Under no trend and independent noise each verdict has probability ≤ 5 %; under the measured
    serial dependence it said "not reproduced" 33 % of the time with no trend. Secondary: every
    layer's series.

    *Earliest rule* (before the protocol; shown, does not decide): Spearman over the second half of training with as few
    as 3 points, where the asymptotic p-value was 0 for ρ = ±1 (the exact minimum is 1/6).
    """),
))

_add(Claim(
    id='C6a', notebook='06_trace_generalisation',
    title='06 — Hessian trace and generalisation (C6, first half)',
    summary='a lower Hessian trace goes with better generalisation',
    statement=_text("""
    A lower Hessian trace goes with better generalisation: among trained
    networks, those whose loss surface is flatter (smaller tr ∇²L) reach higher test accuracy and a
    smaller gap between training and test performance.
    """),
    paper_reports=_text("""
    The motivation for Hessian trace regularisation: the trace falls as
    training converges to flatter regions, and flatter regions generalise better.
    """),
    paper_summary='motivation of HTR: flatter (lower-trace) solutions generalise better',
    rates=_line("""
    false R 2.7 %; false N 1.7 %; power 57 % at partial ρ = −0.5 given the loss (reg. am. 3: the 35 × 1 design,
    never run here; model fitted to the earlier 7 × 3 sweep)
    """),
    rule=_text("""
    **Current rule: PROTOCOL.md regularisation amendment 3 (issue 31), with amendment 5's fourth outcome
    (2026-12-07), fixed before the runs they judge**: a design that can see the claim. Every setting trains to a **common training loss**:
    a run stops after the first epoch whose training-set loss (eval mode) is ≤ L* = 0.56 (cap 15
    epochs); **35 settings × 1 seed**. Partial Spearman ρ of the final Hessian trace against test
    accuracy and against the train − test accuracy gap, given the loss reached, runs as points,
    95 % intervals from a cluster bootstrap over settings.

    * **reproduced** if ρ(trace, test acc. | loss) lies below 0 and ρ(trace, gap | loss) above 0;
    * **not reproduced** if either interval lies on the wrong side (flatter goes with worse
      generalisation);
    * **inconclusive** otherwise.

    **Budget rule**, applied before any of the 35 runs is trained: the design decides only if its
    calibrated power at ρ = −0.5 (in a model fitted to the measured fixed-epoch sweep) is ≥ 50 % and
    35 × t₁₅ ≤ 20 min (t₁₅: median wall time of the study's own full-length SGD runs); otherwise the
    runs are not trained and the verdict is **not tested at this budget** (amendment 5: a fourth
    outcome, as the budget was set knowing the runs' speed), with those numbers; where the profile
    trains no sweep (cpu, issue 33: moved to the paper profile) it is not tested at this budget too. Calibrated in
    a model fitted to the earlier 7 × 3 sweep (600 studies, a design never run here): false reproduced 2.7 %,
    false not reproduced 1.7 %, power 57 % at ρ = −0.5 (the fixed-epoch 7 × 3 design: power 0.7 %, false not
    reproduced 11–15 %).

    **Superseded rules** (kept as history, shown beside, never deciding; newest first).

    *Earlier rule* (PROTOCOL.md before issue 31; the rule changed after issue 31's referee read;
    both shown): the same partial-ρ reading and thresholds on the fixed-epoch sweep (7 settings ×
    3 seeds, 15 epochs). Over its runs Spearman(trace, training loss) was 0.93, so once the loss
    was partialled out nothing was left to correlate: it could not see the claim.

    *Earliest rule (before the protocol; shown beside):* plain Spearman ρ(trace, test acc.) and
    ρ(trace, acc. gap) across the runs, reproduced if both 95 % bootstrap intervals exclude 0 with
    the claimed signs, not reproduced if both point estimates have the wrong sign; it compared runs
    trained to different training losses.
    """),
))

_add(Claim(
    id='C6b', notebook='07_trace_regularisation',
    title='07 — Hessian trace regularisation against SGD and SGD + L2 (C6, second half)',
    summary='Hessian trace regularisation improves test accuracy over SGD and SGD + L2',
    statement=_text("""
    Penalising the trace — Hessian Trace Regularisation (HTR), training
    on loss + γ · Hutchinson estimate of tr ∇²L — improves test accuracy over plain SGD and over SGD
    with L2 weight decay.
    """),
    paper_reports=_text("""
    Test accuracy, mean ± std over 3 reruns, for SGD, SGD + L2 and SGD (+ L2)
    + HTR; e.g. LeNet + MNIST 98.75 ± 0.03 % (SGD) against 98.847 ± 0.019 % (SGD + L2 + HTR); for
    LeNet + FashionMNIST γ = 10⁻⁵ from epoch 20.
    """),
    paper_summary=_text("""
    test accuracy mean ± std over 3 reruns, SGD (+ L2) + HTR above SGD and SGD + L2; e.g. LeNet+MNIST 98.75 ± 0.03 % (SGD) vs 98.847 ± 0.019 % (SGD + L2 + HTR)
    """),
    rates=_line("""
    false R ≤ 0.2 % at +0.05 pt; false N 0.0 %; power 82 % at the paper's +0.1 pt (reg. am. 5: pre-run sd 0.027
    / 0.031 pts, 6 seeds; acting-dose arm, never deciding, at sd 0.097: 2.6 % / 0.1 % / 18 %)
    """),
    rule=_text("""
    **Current rule: PROTOCOL.md regularisation amendments 1–2 (issue 31) and 5 (2026-12-07: the cpu
    profile's 6 evaluation seeds, runs moved to the paper profile) and 6 (the authors' schedule back in the cpu
    profile, scaled down), fixed before the runs they judge.** γ chosen
    on the validation split at seed 0 among 1e-5, 1e-4, 1e-3, 1e-2 (SGD + L2 + HTR uses the same γ); every arm at the profile's evaluation seeds (cpu: 1–6), paired by seed. On the paired 95 % t intervals of **SGD + HTR − SGD** and **SGD + L2 + HTR − SGD + L2**
    (test accuracy), two separate statements:

    * *the paper's +0.1 point* — **the verdict**: **reproduced** if every lower bound is above
      **+0.05 points** (half the paper's gain); **not reproduced** if every upper bound is below
      +0.05 points (any gain is under half the paper's); **inconclusive** otherwise. The two
      regions cannot overlap;
    * *any gain* — reported, not deciding: shown if every lower bound is above 0, a loss if every
      upper bound is below 0, else not shown (with the largest gain the data leave possible).

    **The dose beside every HTR verdict**: the final-trace reduction against SGD (mean per-seed %,
    paired t interval) and the penalty steps per run. **An arm with a dose that acts**, shown beside
    and judged by the same statements on its one comparison (SGD + HTR(dose) − SGD): at seed 0, the
    first of γ 1e-3, 3e-3, 1e-2 (the study's schedule), then γ 1e-3, 1e-2 every 10 steps, whose
    final trace is ≥ 20 % below SGD's (selected at seed 0, before any evaluation seed of the arm). **The authors' schedule** (SGD 30 epochs against SGD + HTR
    40, at the paper's setting, 3 seeds) is shown, never deciding, with the share of the +0.1-point
    gain the 10 extra epochs explain (cpu: on 30 000 of the 60 000 training images, amendment 6; the
    paper-setting row is moved to the paper profile, amendment 5). Across deciding studies: reproduced (not reproduced) if every
    study is, else inconclusive. Calibrated before the run at the earlier run's paired sd (0.027, 0.031 pts)
    and 6 seeds:
    false reproduced ≤ 0.2 % at +0.05 pts, false not reproduced 0.0 % and power 82 % at +0.1 pts,
    minimum detectable effect 0.099 pts (10 seeds: 99.4 %, 0.084). The acting-dose arm's power and
    MDE are recomputed at its own paired sd; below 80 % power it is labelled **underpowered for
    +0.1 pt** (at 0.097 pts and 6 seeds: 18 %, MDE 0.19 pts); it never decides C6b.

    **Superseded rules** (kept as history, shown beside, never deciding; newest first).

    *Earlier rule* (PROTOCOL.md before issue 31; the rule changed after issue 31's referee read;
    both shown): reproduced if both lower bounds are above 0; not reproduced if both upper bounds
    are below +0.1 points; else inconclusive. Its regions overlapped: a true gain of +0.05 pts,
    half the paper's, came out "reproduced" 99.4 % of the time.

    *Earliest rule (before the protocol; shown beside):* 95 % Welch intervals both above 0
    reproduced, both mean differences ≤ 0 not reproduced; with 3 seeds it could detect about 0.9
    points, nine times the claimed gain.
    """),
))

_add(Claim(
    id='C7', notebook='08_middle_layer_htr',
    title='08 — Middle-layer trace regularisation: accuracy and cost (C7)',
    summary=_text("""
    penalising only the middle layers' trace gives comparable or better test accuracy than the whole network's, at lower compute cost
    """),
    statement=_text("""
    Penalising only the middle layers' trace gives comparable or better test accuracy
    than penalising the whole network, at a lower compute cost.
    """),
    paper_reports=_text("""
    Middle-layer HTR (for LeNet + FashionMNIST γ = 10⁻⁶) with accuracy on
    a par with full HTR, motivated by the middle layers' spectra being the closest to the full
    Hessian's (C4), and cheaper because fewer parameters are penalised.
    """),
    paper_summary='middle-layer HTR (γ = 1e-6 for LeNet+FashionMNIST) on a par with full HTR, cheaper',
    rates=_line("""
    accuracy half: false R 2.5 % on the margin; false N 0.0 %; power 74 % at middle = full (reg. am. 5: sd
    0.0375 pts, 6 seeds, margin 0.05 pt assuming a 0.1-pt C6b gain); gate: P(acts) 0 % at 1 % / 1 %, 50 % on
    each floor, 100 % at 20 % / 20 %; cost half not calibrated (fixed thresholds 0.9 / 1)
    """),
    rule=_text("""
    **Current rule: PROTOCOL.md regularisation amendment 4 (issue 31), with amendment 5 (2026-12-07: 6 seeds,
    "not tested (dose)"), fixed before the runs they judge.** Per middle rule with a trained arm (cpu: the layer rule; the authors' index rule is
    timed only), the profile's paired evaluation seeds (cpu: 6, amendment 5):

    1. **The arm must act**: the paired 95 % interval of (middle − SGD) on the final trace lies
       below 0, **and** its mean per-seed trace reduction is **≥ 5 %** and **≥ half the full HTR
       arm's**. If its reduction fails either floor the accuracy half is **not tested (dose)**
       (amendment 5: a fourth outcome, as the floors were set knowing the measured 1.1 % change); if
       only the interval reaches 0 it is inconclusive. The middle arm at a dose matching an acting
       full arm decides only where the profile trains it.
    2. **Accuracy**, only if notebook 07 established an HTR gain (paired HTR − SGD interval above
       0): margin m = half that gain; paired interval of (middle − full HTR): reproduced if
       lo > −m, not reproduced if hi < −m, else inconclusive.
    3. **Cost**: median penalty step middle / full ≤ 0.9 reproduced, ≥ 1 not reproduced, else
       inconclusive; beside it the middle set's share of parameters and of the penalty's compute,
       and the layers the penalty's per-probe double backward passes through and skips (for the
       layer rule it skips the convolutions: the saving is not from penalising fewer parameters).

    A rule passes C7 if accuracy and cost are both reproduced (fails if either is not reproduced;
    not tested if the accuracy half is not tested and the cost half is not not reproduced); overall reproduced if some rule passes, not reproduced if every rule fails, else inconclusive.
    Secondary, never deciding: middle − full HTR **equivalent within ±0.1 pt** if its interval
    lies inside (−0.1, +0.1) pts, not equivalent if wholly outside. The dose (trace reduction,
    penalty steps per run) stands beside every arm. Calibrated before the run at the earlier run's sd
    of middle − full (0.0375 pts) and 6 seeds: false reproduced 2.5 %, false not reproduced 0.0 %, power 74 % at
    middle = full (10 seeds: 2.3 %, 0.0 %, 96 %; at sd 0.097 pts, 6 seeds: power 18 %); false "equivalent" at
    ±0.1 pt ≤ 2.7 %. The gate: P(acts) 0 % as first measured (1.1 % against 1.0 %), 50 % on each floor, 100 %
    when both arms reduce the trace by 20 %. The cost half has fixed thresholds and no calibration.

    **Superseded rules** (kept as history, shown beside, never deciding; newest first).

    *Earlier rule* (PROTOCOL.md before issue 31; the rule changed after issue 31's referee read;
    both shown): the same, except that the arm acted as soon as its trace interval lay below 0 —
    granted for a 1 % trace change.

    *Earliest rule (before the protocol; shown beside):* Welch interval of middle − full HTR with a
    fixed 0.3-point non-inferiority margin, and the same cost test.
    """),
))
