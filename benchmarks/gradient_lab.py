"""A gradient-estimator lab: bias and variance of the SVG estimators against the exact LQG gradient.

On the linear-quadratic-Gaussian task (``torchrl_svg.envs.LQGEnv``, float64) every policy
gradient is known in closed form (``lqg_policy_gradient``, ``lqg_lookahead_return``). For a
fixed linear-Gaussian policy the lab draws ``N`` real trajectories of ``T`` steps and computes,
with the package's own losses, the gradient estimate of each estimator on groups of
trajectories; from the group means it reports the estimate's bias against the gradient of the
objective the estimator targets and its variance per trajectory:

* ``svg0`` (``SVG0Loss`` with a Q critic), ``svg1`` / ``svg2`` / ``svg5`` / ``svg10``
  (``SVGLoss(horizon=k)`` along real sub-trajectories with a V critic): their target is the
  gradient of the k-step lookahead :math:`E[\\sum_{j<k}\\gamma^j r_{t+j} + \\gamma^k V(s_{t+k})]`
  from the states the trajectories visit (each step equally weighted), the policy's
  parameters moving only inside the lookahead (``lqg_lookahead_return`` on
  ``lqg_state_moments``);
* ``svginf`` (``SVGInfLoss``, gradients along the real trajectories), ``planner``
  (``SVGInfLoss(noise="sampled")``, model-simulated trajectories from the real first states)
  and ``reinforce`` (the score-function estimator with the critic as baseline,
  :math:`\\sum_t\\gamma^t\\nabla\\log\\pi(a_t|s_t)(G_t - V(s_t))`): their target is the gradient of
  the T-step return :math:`E[\\sum_{t<T}\\gamma^t r_t]`.

Each runs with the exact model and critic, with a learned ``GaussianDynamics`` fitted on the
same trajectories (``learned``: 64x64; ``degraded``: 4 hidden units, the SVG paper's Fig. 3
middle) and with learned critics (V and Q fitted on the same data by fitted policy
evaluation). Sweeps: the horizon ``T``, the policy noise, the model capacity. Per estimator
the report gives the cosine and relative error of the mean estimate against the exact
gradient, the bias's standard error, the trace of the per-trajectory covariance and its
relative standard error, and the trajectories needed for a cosine of 0.99
(:math:`1 - \\cos \\approx (|b_\\perp|^2 + \\mathrm{tr}\\,\\Sigma_\\perp / N) / (2|g|^2)`).

Writes ``gradient_lab.json`` and plots to ``--out``::

    python benchmarks/gradient_lab.py --trajectories 2000 --groups 20
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from tensordict.nn import TensorDictModule  # noqa: E402
from torch import nn  # noqa: E402

from torchrl_svg.envs import (  # noqa: E402
    LQGEnv,
    linear_gaussian_actor,
    lqg_dynamics_model,
    lqg_lookahead_return,
    lqg_policy_gradient,
    lqg_reward_module,
    lqg_state_moments,
    lqg_value_function,
    lqg_value_module,
)
from torchrl_svg.modules import GaussianDynamics, make_qvalue, make_value  # noqa: E402
from torchrl_svg.objectives import GaussianWorldModelLoss, SVG0Loss, SVGInfLoss, SVGLoss  # noqa: E402

DTYPE = torch.float64
GAIN = [[-0.2, -0.6]]
GAMMA = 0.95
SVGK = (1, 2, 5, 10)
ESTIMATORS = ("svg0", *(f"svg{k}" for k in SVGK), "svginf", "planner", "reinforce")


class ExactQ(nn.Module):
    """Q(s, a) = r(s, a) + gamma E[V(s')] for the LQG task and V(s) = -s'Ps - c."""

    def __init__(self, env: LQGEnv, P: torch.Tensor, c: torch.Tensor, gamma: float):
        super().__init__()
        self.env, self.P, self.c, self.gamma = env, P, c, gamma
        self.noise = torch.trace(P @ torch.diag(env.noise_std**2))

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        env = self.env
        reward = -(
            ((observation @ env.Q) * observation).sum(-1) + ((action @ env.R) * action).sum(-1)
        )
        mean = observation @ env.A.T + action @ env.B.T
        value = -(((mean @ self.P) * mean).sum(-1) + self.noise) - self.c
        return (reward + self.gamma * value).unsqueeze(-1)


def _policy(log_std: float):
    return linear_gaussian_actor(2, 1, gain=GAIN, log_std=log_std, dtype=DTYPE)


def draw_trajectories(env: LQGEnv, log_std: float, count: int, steps: int, seed: int):
    """``count`` real episodes of ``steps`` steps: a ``[count, steps]`` TensorDict."""
    episodes = LQGEnv(
        dtype=DTYPE, horizon=steps, batch_size=[count], seed=seed, noise_std=env.noise_std
    )
    with torch.no_grad():
        data = episodes.rollout(steps, _policy(log_std), break_when_any_done=False)
    return data.select(
        "observation",
        "action",
        "action_log_prob",
        ("next", "observation"),
        ("next", "reward"),
        ("next", "done"),
        ("next", "terminated"),
    )


def fit_dynamics(data: TensorDict, hidden: tuple[int, ...], steps: int = 2000) -> GaussianDynamics:
    """A ``GaussianDynamics`` fitted by Gaussian NLL on the transitions of ``data``."""
    torch.manual_seed(0)
    model = GaussianDynamics(2, 1, hidden_sizes=hidden, activation_class=nn.Tanh).to(DTYPE)
    flat = data.reshape(-1)
    loss = GaussianWorldModelLoss(model)
    loss.update_normalizers(flat)
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        batch = flat[torch.randint(flat.numel(), (512,))]
        optim.zero_grad()
        loss(batch)["loss_dynamics"].backward()
        optim.step()
    return model


def fit_critics(data: TensorDict, gamma: float, iterations: int = 3000):
    """V and Q fitted by fitted policy evaluation (TD(0), a Polyak target) on ``data``."""
    torch.manual_seed(0)
    value = make_value(2, hidden_sizes=(64, 64), activation_class=nn.Tanh).to(DTYPE)
    qvalue = make_qvalue(2, 1, hidden_sizes=(64, 64), activation_class=nn.Tanh).to(DTYPE)
    target = make_value(2, hidden_sizes=(64, 64), activation_class=nn.Tanh).to(DTYPE)
    target.load_state_dict(value.state_dict())
    flat = data.reshape(-1)
    optim = torch.optim.Adam([*value.parameters(), *qvalue.parameters()], lr=1e-3)
    for _ in range(iterations):
        batch = flat[torch.randint(flat.numel(), (512,))]
        with torch.no_grad():
            next_value = target.module(batch["next", "observation"]).squeeze(-1)
            y = batch["next", "reward"].squeeze(-1) + gamma * next_value
        v = value.module(batch["observation"]).squeeze(-1)
        q = qvalue.module(batch["observation"], batch["action"]).squeeze(-1)
        optim.zero_grad()
        ((v - y).pow(2).mean() + (q - y).pow(2).mean()).backward()
        optim.step()
        with torch.no_grad():
            for t, s in zip(target.parameters(), value.parameters(), strict=True):
                t.lerp_(s, 0.01)
    return value, qvalue


def _slices(data: TensorDict, k: int) -> TensorDict:
    """Every sub-trajectory of ``k`` steps: ``[N * (T - k + 1), k]`` (or transitions for k = 1)."""
    if k == 1:
        return data.reshape(-1)
    steps = data.shape[-1]
    index = torch.arange(steps - k + 1).unsqueeze(-1) + torch.arange(k)
    return data[:, index].reshape(-1, k)


def reinforce_gradient(actor, value_fn, data: TensorDict, gamma: float) -> list[torch.Tensor]:
    """The score-function estimate with a state-value baseline, averaged over the episodes."""
    reward = data["next", "reward"].squeeze(-1)  # [N, T]
    steps = reward.shape[-1]
    discount = gamma ** torch.arange(steps, dtype=DTYPE)
    to_go = torch.flip(torch.cumsum(torch.flip(reward * discount, [-1]), -1), [-1]) / discount
    with torch.no_grad():
        baseline = value_fn(data["observation"]).squeeze(-1)
    dist = actor.get_dist(data.select("observation"))
    log_prob = dist.log_prob(data["action"])
    surrogate = (discount * log_prob * (to_go - baseline)).sum(-1).mean()
    return torch.autograd.grad(surrogate, _params(actor))


def _params(actor) -> list[torch.Tensor]:
    return [actor[0].module.gain, actor[0].module.log_std]


def _grad_of(loss_value: torch.Tensor, actor) -> torch.Tensor:
    grads = torch.autograd.grad(-loss_value, _params(actor))
    return torch.cat([g.flatten() for g in grads])


def estimator_gradient(name: str, parts: dict, group: TensorDict) -> torch.Tensor:
    """One estimator's gradient of the return (ascent direction) on a group of episodes."""
    actor, gamma = parts["actor"], GAMMA
    if name == "svg0":
        loss = SVG0Loss(actor, parts["qvalue"])
        loss.make_value_estimator(gamma=gamma)
        return _grad_of(loss.actor_loss(group.reshape(-1))[0], actor)
    if name.startswith("svg") and name[3:].isdigit():
        k = int(name[3:])
        loss = SVGLoss(actor, parts["value"], parts["dynamics"], parts["reward"], horizon=k)
        loss.make_value_estimator(gamma=gamma)
        return _grad_of(loss.actor_loss(_slices(group, k))[0], actor)
    if name in ("svginf", "planner"):
        noise = "inferred" if name == "svginf" else "sampled"
        loss = SVGInfLoss(actor, parts["dynamics"], parts["reward"], noise=noise)
        loss.make_value_estimator(gamma=gamma)
        return _grad_of(loss.actor_loss(group)[0], actor)
    if name == "reinforce":
        grads = reinforce_gradient(actor, parts["value_fn"], group, gamma)
        return torch.cat([g.flatten() for g in grads])
    raise ValueError(name)


def exact_gradient(name: str, env: LQGEnv, log_std: float, steps: int) -> torch.Tensor:
    """The gradient of the objective ``name`` targets, exactly."""
    gain = torch.tensor(GAIN, dtype=DTYPE)
    ell = torch.full((1,), log_std, dtype=DTYPE)
    if name in ("svginf", "planner", "reinforce"):
        _, dK, dl = lqg_policy_gradient(env, gain, ell, steps, GAMMA)
        return torch.cat([dK.flatten(), dl])
    k = 1 if name == "svg0" else int(name[3:])
    P, c = lqg_value_function(env, gain, ell, GAMMA)
    mean, cov = lqg_state_moments(env, gain, ell, steps - k + 1)
    g, l2 = gain.clone().requires_grad_(), ell.clone().requires_grad_()
    objective = (
        sum(
            lqg_lookahead_return(env, g, l2, mean[t], cov[t], k, GAMMA, (P, c))
            for t in range(mean.shape[0])
        )
        / mean.shape[0]
    )
    dK, dl = torch.autograd.grad(objective, [g, l2])
    return torch.cat([dK.flatten(), dl])


def statistics_of(estimates: torch.Tensor, exact: torch.Tensor, per_group: int) -> dict:
    """Bias and variance figures from ``[G, P]`` group-mean estimates of ``per_group`` episodes."""
    groups = estimates.shape[0]
    mean = estimates.mean(0)
    cov_groups = torch.cov(estimates.T).reshape(exact.numel(), exact.numel())
    cov = cov_groups * per_group  # per episode
    norm2 = float(exact.pow(2).sum())
    unit = exact / exact.norm()
    projector = torch.eye(exact.numel(), dtype=DTYPE) - torch.outer(unit, unit)
    bias = mean - exact
    bias_perp2 = float((projector @ bias).pow(2).sum())
    trace_perp = float(torch.trace(projector @ cov @ projector))
    budget = 2 * 0.01 * norm2 - bias_perp2
    needed = trace_perp / budget if budget > 0 else math.inf
    std_error = (torch.diagonal(cov_groups) / groups).sqrt()
    return {
        "cosine": float(torch.nn.functional.cosine_similarity(mean, exact, dim=0)),
        "relative_error": float(bias.norm() / exact.norm()),
        "bias_in_standard_errors": float((bias.abs() / std_error.clamp_min(1e-300)).max()),
        "trace_cov_per_episode": float(torch.trace(cov)),
        "relative_std_error_per_episode": float(torch.trace(cov).sqrt() / exact.norm()),
        "episodes_for_cosine_0.99": needed,
        "mean_estimate": mean.tolist(),
        "exact": exact.tolist(),
    }


def run_cell(
    env: LQGEnv,
    log_std: float,
    steps: int,
    count: int,
    groups: int,
    model: str,
    critic: str,
    estimators,
    seed: int,
) -> dict:
    """Every estimator on one set of trajectories (one model and critic choice)."""
    data = draw_trajectories(env, log_std, count, steps, seed)
    gain = torch.tensor(GAIN, dtype=DTYPE)
    ell = torch.full((1,), log_std, dtype=DTYPE)
    P, c = lqg_value_function(env, gain, ell, GAMMA)
    if model == "exact":
        dynamics = lqg_dynamics_model(env)
    else:
        dynamics = fit_dynamics(data, (64, 64) if model == "learned" else (4,))
    if critic == "exact":
        value = lqg_value_module(P, c)
        qvalue = TensorDictModule(
            ExactQ(env, P, c, GAMMA),
            in_keys=["observation", "action"],
            out_keys=["state_action_value"],
        )
    else:
        value, qvalue = fit_critics(data, GAMMA)
    parts = {
        "actor": _policy(log_std),
        "value": value,
        "value_fn": value.module,
        "qvalue": qvalue,
        "dynamics": dynamics,
        "reward": lqg_reward_module(env),
    }
    per_group = count // groups
    out = {}
    if critic == "learned":  # how well the learned critics' gradients match the exact ones
        out["critic_check"] = _critic_check(env, P, c, value, qvalue, data)
    for name in estimators:
        t0 = time.perf_counter()
        if name == "critic_check":
            continue
        torch.manual_seed(seed)
        estimates = torch.stack(
            [
                estimator_gradient(name, parts, data[g * per_group : (g + 1) * per_group])
                for g in range(groups)
            ]
        )
        out[name] = {
            **statistics_of(estimates, exact_gradient(name, env, log_std, steps), per_group),
            "seconds": time.perf_counter() - t0,
        }
        print(
            f"T={steps} log_std={log_std} model={model} critic={critic} {name}: "
            f"cos {out[name]['cosine']:.4f} rel err {out[name]['relative_error']:.3f} "
            f"rel std/episode {out[name]['relative_std_error_per_episode']:.3g}",
            flush=True,
        )
    return out


def _critic_check(env, P, c, value, qvalue, data) -> dict:
    """Cosine of the learned critics' input gradients with the exact ones, over the data."""
    flat = data.reshape(-1)[:5000]
    obs = flat["observation"].clone().requires_grad_()
    act = flat["action"].clone().requires_grad_()
    exact_q = ExactQ(env, P, c, GAMMA)
    (dq_exact,) = torch.autograd.grad(exact_q(obs, act).sum(), act)
    (dq_learned,) = torch.autograd.grad(qvalue.module(obs, act).sum(), act)
    (dv_learned,) = torch.autograd.grad(value.module(obs).sum(), obs)
    dv_exact = -2 * obs.detach() @ P

    def cos(a, b):
        return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))

    return {"dQ_da_cosine": cos(dq_learned, dq_exact), "dV_ds_cosine": cos(dv_learned, dv_exact)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trajectories", type=int, default=2000)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--horizons", type=int, nargs="+", default=[10, 50, 200, 1000])
    parser.add_argument("--log-stds", type=float, nargs="+", default=[0.0, -1.0, -2.0, -3.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "gradient_lab"
    )
    parser.add_argument(
        "--replot",
        type=Path,
        default=None,
        help="redraw the plots and the table of a saved gradient_lab.json into --out",
    )
    args = parser.parse_args(argv)
    if args.replot is not None:
        report = json.loads(args.replot.read_text())
        args.out.mkdir(parents=True, exist_ok=True)
        _plots(report["cells"], args.out)
        _table(report, args.out / "gradient_lab.md")
        return 0
    torch.set_num_threads(1)
    # the commit the run starts from (the code it runs)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    env = LQGEnv(dtype=DTYPE)
    cells = []

    def record(sweep, **cell):
        result = run_cell(env, count=args.trajectories, groups=args.groups, seed=args.seed, **cell)
        cells.append(
            {
                "sweep": sweep,
                **{k: v for k, v in cell.items() if k != "estimators"},
                "results": result,
            }
        )

    for steps in args.horizons:  # horizon, exact model and critics
        record(
            "horizon",
            log_std=-1.0,
            steps=steps,
            model="exact",
            critic="exact",
            estimators=ESTIMATORS,
        )
    for log_std in args.log_stds:  # policy noise
        record(
            "noise",
            log_std=log_std,
            steps=50,
            model="exact",
            critic="exact",
            estimators=("svg1", "svginf", "reinforce"),
        )
    for model in ("learned", "degraded"):  # model capacity, as the horizon grows
        for steps in args.horizons:
            record(
                "model",
                log_std=-1.0,
                steps=steps,
                model=model,
                critic="exact",
                estimators=("svg1", "svg5", "svginf", "planner"),
            )
    record(  # learned critics
        "critic",
        log_std=-1.0,
        steps=200,
        model="exact",
        critic="learned",
        estimators=("svg0", "svg1", "svg5", "reinforce"),
    )

    report = {
        "command": "python benchmarks/gradient_lab.py " + " ".join(argv or sys.argv[1:]),
        "git_commit": commit,
        "policy": {"gain": GAIN, "gamma": GAMMA},
        "trajectories": args.trajectories,
        "groups": args.groups,
        "cells": cells,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gradient_lab.json").write_text(json.dumps(report, indent=2))
    _plots(cells, args.out)
    _table(report, args.out / "gradient_lab.md")
    return 0


def _series(cells, sweep, x_key, value_key, filter_fn=lambda c: True):
    series: dict[str, list] = {}
    for cell in cells:
        if cell["sweep"] != sweep or not filter_fn(cell):
            continue
        for name, r in cell["results"].items():
            if name == "critic_check":
                continue
            label = name if sweep != "model" else f"{name} ({cell['model']} model)"
            series.setdefault(label, []).append((cell[x_key], r[value_key], 0.0))
    return series


def _plot(series: dict, path: Path, title: str, xlabel: str, ylabel: str, logx=True, logy=True):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    styles = {"learned model": "--", "degraded model": ":", "learned critic": "-."}
    for label, points in series.items():
        points = sorted(points)
        setting = label[label.find("(") + 1 : -1] if "(" in label else ""
        ax.plot(
            [p[0] for p in points],
            [max(p[1], 1e-12) for p in points],
            marker="o",
            markersize=3,
            linestyle=styles.get(setting, "-"),
            label=label,
        )
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _error_vs_trajectories(cells, steps: int = 200) -> dict[str, list]:
    """Relative RMS error of an N-trajectory estimate, sqrt(b^2 + s^2 / N), N = 1 .. 10^4.

    ``b``: the cell's relative error of the mean estimate (measured with all its
    trajectories), ``s``: its relative standard error per trajectory.
    """
    counts = [1, 3, 10, 30, 100, 300, 1000, 3000, 10000]
    series: dict[str, list] = {}
    for cell in cells:
        if cell["steps"] != steps or cell["log_std"] != -1.0:
            continue
        setting = {"horizon": "exact", "model": f"{cell['model']} model"}.get(
            cell["sweep"], f"{cell['critic']} critic"
        )
        if cell["sweep"] == "noise":
            continue
        for name, r in cell["results"].items():
            if name == "critic_check":
                continue
            b, s = r["relative_error"], r["relative_std_error_per_episode"]
            series[f"{name} ({setting})"] = [(n, math.sqrt(b**2 + s**2 / n), 0.0) for n in counts]
    return series


def _plots(cells, out: Path) -> None:
    _plot(
        _error_vs_trajectories(cells),
        out / "error_vs_trajectories.png",
        "T = 200: relative RMS error of an estimate from N trajectories",
        "trajectories N",
        "sqrt(bias^2 + var / N) / |g|",
    )
    _plot(
        _series(cells, "horizon", "steps", "relative_std_error_per_episode"),
        out / "variance_vs_horizon.png",
        "exact model and critics: relative standard error per episode",
        "episode length T",
        "sqrt(tr Cov) / |g| per episode",
    )
    _plot(
        _series(cells, "horizon", "steps", "relative_error"),
        out / "bias_vs_horizon.png",
        "exact model and critics: relative error of the mean estimate",
        "episode length T",
        "|mean - exact| / |exact|",
    )
    _plot(
        _series(cells, "noise", "log_std", "relative_std_error_per_episode"),
        out / "variance_vs_policy_noise.png",
        "T = 50: relative standard error per episode vs policy noise",
        "policy log std",
        "sqrt(tr Cov) / |g| per episode",
        logx=False,
    )
    _plot(
        _series(cells, "model", "steps", "relative_error"),
        out / "model_capacity.png",
        "learned (64x64) and degraded (4 units) models: relative error vs T",
        "episode length T",
        "|mean - exact| / |exact|",
    )


def _table(report: dict, path: Path) -> None:
    lines = [
        "# Gradient-estimator lab (LQG, float64)",
        "",
        f"`{report['command']}` at `{report['git_commit'][:10]}`: {report['trajectories']} "
        f"trajectories in {report['groups']} groups per cell; policy gain {GAIN}, gamma {GAMMA}.",
        "",
        "| sweep | T | log std | model | critic | estimator | cosine | rel. error | "
        "bias / s.e. | rel. std / episode | episodes for cos 0.99 |",
        "|---|---:|---:|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for cell in report["cells"]:
        for name, r in cell["results"].items():
            if name == "critic_check":
                continue
            lines.append(
                f"| {cell['sweep']} | {cell['steps']} | {cell['log_std']} | {cell['model']} | "
                f"{cell['critic']} | {name} | {r['cosine']:.4f} | {r['relative_error']:.3f} | "
                f"{r['bias_in_standard_errors']:.1f} | {r['relative_std_error_per_episode']:.3g} | "
                f"{r['episodes_for_cosine_0.99']:.3g} |"
            )
    for cell in report["cells"]:
        check = cell["results"].get("critic_check")
        if check:
            lines += [
                "",
                f"Learned critics (T = {cell['steps']}): cosine of dQ/da with the exact one "
                f"{check['dQ_da_cosine']:.3f}, of dV/ds {check['dV_ds_cosine']:.3f}.",
            ]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
