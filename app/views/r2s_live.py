"""R2S live: attack the random switch between tickets, adaptively and with the paper's protocol."""
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

import compute
import jobs
import r2s_eval
import reports
import state
import store
import ui
from rst.evaluation.verdicts import RECHECK_MARGIN


st.title("R2S live: attacking the random switch")
act = state.require_active()
if act is None:
    st.stop()
cs = act.cs
alpha = cs.probabilities
st.caption("R2S answers each query with a randomly drawn ticket of the candidate set. Expected accuracy is exact: "
           "every adversarial example is evaluated on every member, "
           + ("members equally likely" if alpha is None else
              "each member weighted by its switch probability α, fitted on validation images and stored in the "
              "set's file (renormalised over the members chosen below)")
           + ". An adaptive attacker targets the (α-weighted) expectation over members; the paper's protocol does not.")
if alpha is not None:
    st.markdown("**Switch probabilities α**: " + ", ".join(f"{t.name} **{a:.3f}**" for t, a in zip(cs.tickets, alpha)))
default_eps = state.default_eps(act)
n_max = store.require_eval_images(cs.spec.dataset)
labels = state.ticket_labels(cs)
stored = reports.stored_r2s(act.zoo_id)
job = jobs.live_job(st.session_state, "r2s")
if job is not None and job.params.get("set_key") != act.key:
    job = None                                    # a run on another candidate set: not this page's numbers
all_names = [cs.tickets[i].name or f"keep{cs.tickets[i].keep_ratio:g}" for i in range(len(cs))]
if stored is not None:
    rows, cfg = stored
    n_st = cfg.get("n_images")
    same = sorted(map(str, cfg.get("names", []))) == sorted(all_names)
    with st.expander(f"Stored zoo report: {n_st or '?'} test images, {cfg.get('steps', '?')} steps, "
                     f"ε = {cfg.get('eps', '?')}, members {', '.join(map(str, cfg.get('names', [])))}"
                     + ("" if same else " (not every member of this set)"), expanded=job is None):
        frame = pd.DataFrame(rows)
        frame["± SE"] = [ui.se_points(None if v is None else float(v), n_st) for v in frame["expected"]]
        frame[["expected", "worst member"]] = 100 * frame[["expected", "worst member"]].astype(float)
        st.dataframe(frame, hide_index=True, width="stretch",
                     column_config={**{c: st.column_config.NumberColumn(f"{c} (%)", format="%.1f")
                                       for c in ("expected", "worst member")},
                                    "± SE": st.column_config.NumberColumn("± SE (points)", format="%.1f")})
        st.caption(f"± one binomial standard error over the {n_st or '?'} images. Stored with "
                   "`python -m rst eval r2s`; **Attack** below computes live numbers on this set.")
else:
    st.info("No stored zoo report for this candidate set: **Attack** below computes it live.")
compare_report = reports.stored_compare(act.zoo_id)
if compare_report is not None:
    st.subheader("Like with like: each model under its strongest attacks, on the same images")
    r2s_suite = (compare_report.config.get("suite") or {}).get("r2s_suite") or ()
    st.caption("Per image, the worst case over each model's attack suite (stored report, "
               "`python -m rst eval r2s … --protocols all`). R2S: the attacks on the random switch "
               f"({', '.join(r2s_suite) or 'see the suite column'}; the expectation-type ones on the α-weighted "
               "expected loss), scored as the expected accuracy over members; each ticket alone and dense AT: "
               "PGD-20, PGD-100 with restarts, APGD-T. ± is one standard error sqrt(p(1-p)/n).")
    best = compare_report.paired.get("best_member")
    if best:
        c1, c2, c3 = st.columns(3)
        c1.metric("R2S, worst case over its suite", ui.pct_se(best["r2s_acc"], best["n_images"]))
        c2.metric(f"best single ticket ({best['name']}), worst case over its suite",
                  ui.pct_se(best["model_acc"], best["n_images"]))
        c3.metric("R2S − best single ticket (paired, 95 %)", f"{100 * best['difference']:+.1f} "
                  f"[{100 * best['ci_low']:+.1f}, {100 * best['ci_high']:+.1f}]",
                  help=f"paired over the {best['n_images']} images both saw; 95 % interval "
                       f"[{100 * best['ci_low']:+.1f}, {100 * best['ci_high']:+.1f}]")
        st.markdown(f"R2S − best single ticket: **{100 * best['difference']:+.1f} points**, 95 % interval "
                    f"[{100 * best['ci_low']:+.1f}, {100 * best['ci_high']:+.1f}] over {best['n_images']} paired "
                    f"images: **{'significant' if best['significant'] else 'not significant'}**.")
    cf = compare_report.to_frame()
    cf[["clean", "worst_case", "se"]] = 100 * cf[["clean", "worst_case", "se"]].astype(float)
    st.dataframe(cf[["model", "n_images", "clean", "worst_case", "se", "suite"]], hide_index=True, width="stretch",
                 column_config={"clean": st.column_config.NumberColumn("clean (%)", format="%.1f"),
                                "worst_case": st.column_config.NumberColumn("worst case (%)", format="%.1f"),
                                "se": st.column_config.NumberColumn("± SE (points)", format="%.1f"),
                                "n_images": st.column_config.NumberColumn("images")})
classes = ui.CLASSES.get(cs.spec.dataset, tuple(str(i) for i in range(cs.spec.num_classes)))

with st.form("r2s_form"):
    members = st.multiselect("Candidate set members", list(range(len(cs))), default=list(range(len(cs))),
                             format_func=labels.__getitem__, key="r2s_members")
    c1, c2, c3 = st.columns([3, 1, 2])
    D = r2s_eval.PAGE_DEFAULTS
    attack = c1.selectbox("Attack", list(r2s_eval.R2S_ATTACKS), format_func=r2s_eval.R2S_ATTACKS.get, key="r2s_attack",
                          index=list(r2s_eval.R2S_ATTACKS).index(D["attack"]))
    switch = c2.selectbox("Switching", ["batch", "call", "example"], key="r2s_switch",
                          index=["batch", "call", "example"].index(D["switch"]),
                          help="batch: one member per forward call's batch, call: a new draw every call, "
                               "example: a member per example")
    source_member = c3.selectbox("Source member (for 'transfer from one member')", list(range(len(cs))),
                                 format_func=labels.__getitem__, key="r2s_source")
    c1, c2, c3, c4 = st.columns(4)
    eps = c1.number_input("ε", 0.0, 1.0, default_eps, 0.01, format="%.4f", key="r2s_eps")
    steps = c2.number_input("Steps", 1, 200, D["steps"], 1, key="r2s_steps")
    n_images = c3.number_input("Test images", 8, n_max, min(D["n_images"], n_max), 8, key="r2s_images")
    seed = c4.number_input("Seed", 0, 2**31 - 1, D["seed"], 1, key="r2s_seed")
    prec_options = ["bf16", "fp32"] if r2s_eval.default_precision(state.device()) == "bf16" else ["fp32"]
    precision = st.radio("Attack precision", prec_options, horizontal=True, key="r2s_precision",
                         help="bf16: the attacks' forward and backward passes under bf16 autocast (this CPU has "
                              "native bf16), on the members' BN-folded channels-last copies (the same functions "
                              "up to rounding); measured agreement with fp32 in docs/app-speed.md. fp32: on the "
                              "members themselves. Either way the verdicts are the members' own in fp32: with bf16 they are scored in "
                              f"bf16 and every near-tie (top-two margin below {RECHECK_MARGIN:g}) is scored again in fp32.")
    compare = st.checkbox("Beside it, the paper's protocol and every ticket alone (white-box), on the same images "
                          "and settings", value=D["compare"], key="r2s_compare",
                          help="K more single-ticket PGD attacks: about twice the time.")
    run = st.form_submit_button("Attack", type="primary", key="r2s_run")


def _start(params: dict) -> None:
    cache = st.session_state.setdefault("r2s_models", {})          # this session's R2S, built once
    _, msg = jobs.start_live(st.session_state, "r2s", {**params, "set_key": act.key},
                                   lambda job: r2s_eval.run_chunks(job, cs, act.key, params, cache))
    if msg:
        st.warning(msg)


if run:
    bad = ("Choose at least one member." if not members else
           "The source member must be one of the candidate set members." if attack == "member"
           and source_member not in members else None)
    if bad:
        st.error(bad)
    else:
        _start(dict(members=tuple(sorted(members)), switch=switch, attack=attack, eps=float(eps), steps=int(steps),
                    n_images=int(n_images), seed=int(seed), dev=state.device(), source_member=int(source_member),
                    compare=bool(compare), precision=precision))
        job = jobs.live_job(st.session_state, "r2s")


def _img(a: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W) or (H, W, C) for st.image."""
    return a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))


def _render(live) -> None:
    # ------------------------------------------------------------------ headline numbers
    table = pd.DataFrame(live.table)
    first = table.iloc[0]
    paper_row = table[table["what"] == "R2S · paper"]
    clean_row = table[table["what"] == "R2S · clean"]
    c1, c2, c3, c4 = st.columns(4)
    n = live.n_images
    c1.metric(f"{first['what']}: expected", ui.pct_se(first["expected"], n),
              help=f"{first['attack']} — {first['threat model']}. ± one standard error over the {n} images.")
    c2.metric("worst member", ui.pct_se(first["worst member"], n))
    if len(paper_row) and paper_row.index[0] != 0:
        c3.metric("paper's protocol (non-adaptive)", ui.pct_se(paper_row["expected"].iloc[0], n))
    if len(clean_row):
        c4.metric("clean, expected", ui.pct_se(clean_row["expected"].iloc[0], n))
    st.caption(f"{live.data} · {n} of {live.n_target} images attacked"
               + ("" if live.complete else " (refining)") + f" · members: {', '.join(live.members)} · "
               f"attacks in **{live.precision}**" + (" (fp32 one click away: Attack precision)" if live.precision
                                                     == "bf16" else "") + f" · {live.seconds:.1f} s")
    alone = [r for r in live.table if "_paired" in r]
    if alone:
        best = max(alone, key=lambda r: r["expected"])
        d = best["_paired"]
        st.markdown(f"R2S ({first['what'][6:]}) − best ticket alone ({best['what'][7:-6]}), same {n} images: "
                    f"**{100 * d['difference']:+.1f} points**, paired 95 % interval [{100 * d['ci_low']:+.1f}, "
                    f"{100 * d['ci_high']:+.1f}]: **{'significant' if d['significant'] else 'not significant'}**.")

    show = table.drop(columns=["_paired"], errors="ignore")
    for col in ("expected", "worst member", "clean"):
        if col in show:
            show[col] = 100 * show[col]
    cols = [c for c in ("what", "expected", "± SE", "worst member", "clean", "R2S − this (paired)", "n", "adaptive")
            if c in show]
    st.dataframe(show[cols], hide_index=True, width="stretch",
                 column_config={"what": st.column_config.TextColumn(width="medium"),
                                "expected": st.column_config.NumberColumn("expected (%)", format="%.1f", width="small"),
                                "± SE": st.column_config.NumberColumn("± SE (points)", format="%.1f", width="small"),
                                "worst member": st.column_config.NumberColumn("worst member (%)", format="%.1f", width="small"),
                                "clean": st.column_config.NumberColumn("clean (%)", format="%.1f", width="small"),
                                "R2S − this (paired)": st.column_config.TextColumn(
                                    "R2S − this (points, paired 95 %)", width="medium"),
                                "n": st.column_config.NumberColumn("images", width="small"),
                                "adaptive": st.column_config.CheckboxColumn(width="small")})
    # threat models and attacks in full (too long for a table cell), one line per distinct pair
    attacks = {}
    for r in live.table:
        attacks.setdefault((r["threat model"], r["attack"]), []).append(r["what"])
    st.markdown("**Threat model and attack of each row**  \n" + "  \n".join(
        f"{', '.join(w if len(w) < 4 else [w[0], '…', w[-1]])} — {tm}" + (f"; {a}" if a and a != "none" else "")
        for (tm, a), w in attacks.items()))

    fig = go.Figure()
    fig.add_bar(x=table["what"], y=100 * table["expected"], name="expected accuracy (± SE)", marker_color="#1f77b4",
                error_y=dict(type="data", array=table["± SE"].fillna(0).tolist(), visible=True, thickness=1))
    fig.add_bar(x=table["what"], y=100 * table["worst member"], name="worst member", marker_color="#d62728")
    fig.update_layout(barmode="group", yaxis_title="accuracy (%)", yaxis_range=[0, 100], height=380,
                      margin=dict(t=30, b=10), legend=dict(orientation="h", y=1.1))
    ui.plot(fig, key="r2s_bars")
    pm = pd.DataFrame(live.per_member)
    if len(pm):
        pfig = px.bar(pm, x="member", y=pm["accuracy"] * 100, color="attack", barmode="group",
                      labels={"y": "accuracy (%)"}, title="Every member's accuracy on each attack's examples")
        pfig.update_layout(height=340, margin=dict(t=50, b=10), yaxis_range=[0, 100])
        ui.plot(pfig, key="r2s_member_bars")
    r2s_paper = store.paper_reference()["r2s"]["resnet18_cifar10"]
    st.caption(f"Paper (CIFAR-10, ResNet-18, its protocol): R2S {r2s_paper['natural']} % natural / "
               f"{r2s_paper['pgd20']} % PGD-20 — most likely attack-one-member, infer-with-another (non-adaptive). "
               "Only adaptive rows say what an attacker who knows the defence achieves.")

    if live.sanity:
        with st.expander(f"Sanity checks ({sum(s['passed'] for s in live.sanity)}/{len(live.sanity)} passed)",
                         expanded=not all(s["passed"] for s in live.sanity)):
            st.dataframe(pd.DataFrame(live.sanity), hide_index=True, width="stretch")

    # ------------------------------------------------------------------ gallery
    st.subheader("Gallery: clean and adversarial images, every member's prediction")
    g = live.gallery
    st.caption(f"Adversarial images: {g['attack']}.")


    n = len(g["y"])
    st.image([_img(a) for a in g["x"]], caption=[f"#{i} clean: {classes[c]}" for i, c in enumerate(g["y"])], width=88,
             clamp=True)
    st.image([_img(a) for a in g["x_adv"]], caption=[f"#{i} adversarial" for i in range(n)], width=88, clamp=True)
    preds = []
    for name, pc, pa in zip(live.members, g["clean_preds"], g["adv_preds"]):
        preds.append({"member": name, **{f"#{i}": (f"{classes[c]} → {classes[a]}" if c != a else classes[c])
                                         + (" ✓" if a == g["y"][i] else " ✗") for i, (c, a) in enumerate(zip(pc, pa))}})
    st.dataframe(pd.DataFrame(preds), hide_index=True, width="stretch")
    st.caption("Cell: prediction on the clean image → on the adversarial one (when it changes); ✓/✗: adversarial "
               "prediction right or wrong.")



@st.fragment(run_every=0.5 if job is not None and job.running else None)
def live_panel() -> None:
    """The run's progress, Stop, and its numbers so far; polls the job while it runs."""
    job = jobs.live_job(st.session_state, "r2s")
    if job is None or job.params.get("set_key") != act.key:
        st.info("Choose the members and the attack, then **Attack**: the first numbers come after "
                f"{r2s_eval.FIRST_CHUNK} images, then they refine as more images are attacked.")
        return
    if job.running:
        pos = job.queue_position()
        c1, c2 = st.columns([5, 1])
        c1.progress(job.fraction_done(), text=(f"waiting for the CPU: position {pos} in the queue" if pos
                                               else job.text))
        if c2.button("Stop", key="r2s_stop"):
            job.stop()
            job.join(1.0)
            st.rerun()
    elif job.error:
        st.error(f"The run failed: {job.error}")
    elif job.stopped:
        st.warning(f"Stopped: the numbers below are from the {job.partial.n_images if job.partial else 0} "
                   "images attacked before Stop.")
    if job.partial is not None:
        _render(job.partial)
    if not job.running and st.session_state.get("r2s_polling"):
        st.session_state["r2s_polling"] = False
        st.rerun()                                   # the whole page once more, without the timer
    st.session_state["r2s_polling"] = job.running


live_panel()

# ------------------------------------------------------------------ attributions
job = jobs.live_job(st.session_state, "r2s")
if job is None or job.params.get("set_key") != act.key:
    st.stop()
p = job.params
st.subheader("Attributions of one image under different tickets (Captum)")
with st.form("captum_form"):
    c1, c2 = st.columns(2)
    image_index = c1.number_input("Test image #", 0, int(p["n_images"]) - 1, 0, 1, key="cap_image")
    method = c2.radio("Method", ["IntegratedGradients", "Saliency"], horizontal=True, key="cap_method")
    explain = st.form_submit_button("Explain", key="cap_explain")
if explain or st.session_state.get("captum_params"):
    if explain:
        st.session_state["captum_params"] = (act.key, int(image_index), method)
    key, idx, meth = st.session_state["captum_params"]
    if key == act.key:
        att = compute.attributions(act.key, cs, p["members"], idx, meth, p["n_images"], p["dev"])
        maps = np.stack(att["maps"])                                              # (K, H, W)
        scale = np.abs(maps).reshape(len(maps), -1).max(1)                        # (K,)
        maps = maps / np.where(scale > 0, scale, 1.0)[:, None, None]             # each map to [-1, 1]
        # one small map per member in keep-ratio order, left to right and top to bottom, titles on two lines
        order = sorted(range(len(maps)), key=lambda i: cs.tickets[p["members"][i]].keep_ratio)
        n_cols = min(4, len(maps))
        n_rows = -(-len(maps) // n_cols)
        titles = [f"{att['names'][i]}<br>predicts {classes[att['preds'][i]]}" for i in order]
        afig = make_subplots(rows=n_rows, cols=n_cols, subplot_titles=titles, horizontal_spacing=0.03,
                             vertical_spacing=0.12 if n_rows > 1 else 0.05)
        zmin = -1 if meth == "IntegratedGradients" else 0
        for k, i in enumerate(order):
            afig.add_trace(go.Heatmap(z=maps[i], coloraxis="coloraxis",
                                      hovertemplate=f"{att['names'][i]}<br>x %{{x}}, y %{{y}}: %{{z:.2f}}<extra></extra>"),
                           row=k // n_cols + 1, col=k % n_cols + 1)
        afig.update_layout(coloraxis=dict(colorscale="RdBu_r", cmin=zmin, cmax=1, colorbar=dict(title="attr.", len=0.8)),
                           height=60 + 215 * n_rows, margin=dict(t=80, b=10, l=10, r=60),
                           title=f"{meth} w.r.t. the true class “{classes[att['label']]}”")
        for ann in afig.layout.annotations:
            ann.font = dict(size=12)
        afig.update_xaxes(showticklabels=False, constrain="domain")
        afig.update_yaxes(showticklabels=False, autorange="reversed", scaleanchor="x", constrain="domain")
        for k in range(1, n_rows * n_cols):      # every map square, on its own axes
            afig.update_yaxes(scaleanchor=f"x{k + 1}", row=k // n_cols + 1, col=k % n_cols + 1)
        c1, c2 = st.columns([1, 5])
        c1.image(_img(att["image"]), caption=f"#{idx}: {classes[att['label']]}", width=112, clamp=True)
        c1.caption("Each map is scaled to its own largest |attribution|; red: evidence for the class, "
                   "blue: against." if meth == "IntegratedGradients" else "Each map scaled to its own maximum.")
        with c2:
            ui.plot(afig, key="captum_maps")
