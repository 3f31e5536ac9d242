"""The epochs of one ``fit``, written once over an agreement (one process or MPI ranks; see
:mod:`fastvae.training.agreement`): steps, epoch ends, validation, callbacks, checkpoints.

A step happens whole or not at all: until the optimizer steps, any error (or a second
Ctrl-C) gives back what the step drew (its noise, its binarization draws, on a GPU its
share of the loss sums), so that the run goes on from this step exactly as if it had never
started; the update and its record are one.
"""
from __future__ import annotations

import math
import time

import numpy as np

from .average import AVERAGE, RAW
from .evaluate import elbo
from ..core.step import StepContext
from .batches import Batches
from .distributed import DistributedError

#: on a GPU the loss is checked for NaN/inf every this many steps (and whenever the
#: progress bar redraws), not every step: reading it would make the host wait each time
DEVICE_CHECK_EVERY = 100
#: seconds between two epochs' progress lines at least (the first and the last epoch of a
#: fit, and one that stops it, always have theirs): a policy of thousands of short epochs
#: printed a line each (950 for airquality's 122 rows)
LINE_EVERY_S = 1.0


class StopTraining(Exception):
    """Raise from a callback to end ``fit`` after the current epoch."""


class Loop:
    """The epochs of one fit of ``model`` on ``train`` (validated on ``valset``), its
    training state ``st`` advanced in place, over the agreement ``ag``."""

    def __init__(self, model, st, train, valset, settings, callbacks, checkpoint, out, ag,
                 guard, shards=None):
        self.model, self.st, self.train, self.valset = model, st, train, valset
        self.settings, self.callbacks, self.checkpoint = settings, callbacks, checkpoint
        self.out, self.ag, self.guard = out, ag, guard
        self.shown = None  # (when the last epoch line was written)
        self.pending = None  # (the last epoch's line when it was not written)
        self.opt = st.optimizer
        B, N = settings["batch_size"], len(train)
        self.B, self.N = B, N
        self.steps = N // B if settings["drop_last"] else -(-N // B)  # of a whole epoch
        self.warm_steps = settings["kl_warmup"] * self.steps
        self.batches = Batches(model, train, B, settings["binarize"], st.binarize_rng,
                               ag.shard)
        bk = self.bk = model.kernels
        # One process on a GPU: the epoch's running sums (loss, recon, kl) stay on the
        # device and nothing in the loop waits for them (see sync: they are read every
        # DEVICE_CHECK_EVERY steps); they continue from the saved ones, so that a resumed
        # epoch adds in the order of an uninterrupted one.  On the host, and with ranks
        # (whose steps wait for the Allreduce anyway), each step's loss is read, checked
        # and added here, so a non-finite loss stops the step that made it.
        self.acc = None
        if bk.DEVICE and not ag.reads_loss_every_step:
            self.acc = bk.xp.asarray(np.array(st.sums[:3], dtype=np.float64))
            self.acc_mark = bk.xp.empty_like(self.acc)  # the sums before the step in flight
        self.checked = st.epoch_steps  # the last step whose loss is known to be finite
        #: the step's data-parallel shards (fit's ``shards``; None: one pass)
        self.shards = shards

    def stopping(self):
        return self.ag.stopping(self.guard)

    def sync(self, check=True):
        """One process on a GPU: the state's sums = the device's running sums; raise if
        they stopped being finite (the loss is not read every step there: say where)."""
        st, opt = self.st, self.opt
        vals = [float(v) for v in self.bk.to_numpy(self.acc).astype(np.float64)]
        skipped = opt.skipped_updates() if check and opt.clip_norm is not None else 0
        if skipped:
            raise FloatingPointError(
                f"the gradient norm became non-finite at epoch {st.epoch + 1}, in {skipped} "
                f"of steps {self.checked + 1} to {st.epoch_steps}: those steps left the "
                f"parameters unchanged; try a smaller lr (now {opt.lr})")
        if check and not all(math.isfinite(v) for v in vals):
            raise FloatingPointError(
                f"the loss became non-finite at epoch {st.epoch + 1}, between steps "
                f"{self.checked + 1} and {st.epoch_steps}; the model's parameters may no "
                f"longer be finite: reload the last checkpoint and try a smaller lr (now "
                f"{opt.lr})")
        st.sums[:3] = vals

    def loss_note(self):  # the progress bar's loss, read only when the bar redraws
        if self.acc is not None:
            self.sync()
        return f"loss {self.st.sums[0] / max(1, self.st.sums[3]):.2f}"

    def run(self, epochs):
        """Train ``epochs`` epochs (or until stopped); True when all of them finished."""
        try:
            for k in range(epochs):
                self.epoch()
                if self.stopping():
                    return False
                if self.end_epoch(last=k == epochs - 1):
                    return False
            return True
        finally:
            self.hold(AVERAGE)  # (however the run ends, the model gives back the average)
            if self.pending is not None:  # (a run that ends between lines: its last one)
                self.ag.side(self.out.finish, self.pending)
                self.pending = None
            self.model.kl_scale = 1.0
            if self.acc is not None:
                try:
                    self.sync(check=False)
                except Exception:  # noqa: BLE001  (the error in flight is the one to report)
                    pass

    def hold(self, which):
        """With a weight average (fit's ``average``): the model's parameters become the
        raw weights (RAW: for the steps) or their average (AVERAGE: everything else)."""
        if self.st.average is not None:
            self.guard.hold()  # (a second Ctrl-C lands after the exchange and its label)
            try:
                self.st.average.hold(which)
            finally:
                self.guard.release()

    def epoch(self):
        """The steps of one epoch (the rest of the one in progress), until stopped."""
        st, B, N, out, ag = self.st, self.B, self.N, self.out, self.ag
        self.hold(RAW)
        # an epoch in progress keeps the order it started with
        shuffled = st.epoch_shuffle if st.row else self.settings["shuffle"]
        order, self.order_after = st.epoch_order(N, shuffled)
        st.epoch_shuffle = shuffled
        self.batches.start_epoch(order, st.row)
        t0 = time.perf_counter()
        ag.side(out.start, f"epoch {st.epoch + 1}", self.steps, B, -(-st.row // B))
        self.checked = st.epoch_steps
        while st.row < N and not (self.settings["drop_last"] and N - st.row < B):
            if self.stopping():
                break
            self.step()
            ag.side(out.update, -(-st.row // B), self.loss_note)
        if self.acc is not None:
            self.sync()
        st.seconds += time.perf_counter() - t0

    def step(self):
        model, st = self.model, self.st
        if self.warm_steps > 0:
            model.kl_scale = kl_scale(st.step + 1, self.warm_steps)
        # One process holds a second Ctrl-C until the step is over, so that neither the
        # step nor its give-back is ever cut short; a rank waiting in a collective must stay
        # abortable, so there only the update and its record are held (see update).
        whole = self.ag.holds_whole_step
        if whole:
            self.guard.hold()
        try:
            self.update(*self.compute())
        finally:
            if whole:
                self.guard.release()

    def compute(self):
        """Forward, backward and the agreement of one step, given back on failure.
        Returns (stop, n, sums, mark) for :meth:`update`."""
        model, st, ag = self.model, self.st, self.ag
        start, stop = st.row, min(self.N, st.row + self.B)
        lo, hi = ag.shard(start, stop)
        failure, sums = None, (0.0, 0.0, 0.0, hi - lo)
        mark = self.mark()
        try:
            ag.begin_step(model.free_bits)
            try:
                sums = self.local_step(lo, hi, start, stop)
                ag.ready()  # a GPU's errors surface here, inside the agreement
            except DistributedError:
                raise  # another rank failed, and every rank knows it already
            except Exception as e:  # noqa: BLE001  (with ranks: told to them all)
                failure = ag.fail(e)
            sums = ag.agree(failure, self.guard.hit, sums)[1]
            ag.allreduce_(model.flat_grads)
        except BaseException:
            self.rollback(mark)
            raise
        return stop, stop - start, sums, mark

    def update(self, stop, n, sums, mark):
        """The optimizer step and its record, as one."""
        opt, st = self.opt, self.st
        count = opt.step_count
        self.guard.hold()  # a second Ctrl-C now lands after the record
        try:
            opt.step()  # the gradient buffer backward (and the Allreduce) filled
            if st.average is not None:
                st.average.update(self.settings["average"], st.step + 1)
        except BaseException as e:
            if opt.step_count == count:
                self.rollback(mark)
            else:
                self.record(stop, n, sums)
            if not isinstance(e, KeyboardInterrupt):
                # after the agreement the other ranks cannot be told of it
                self.ag.abort(1, f"MPI rank {self.ag.rank} failed in the optimizer update "
                                 f"({type(e).__name__}: {e})")
            raise
        else:
            self.record(stop, n, sums)
        finally:
            self.guard.release()
        if self.ag.reads_loss_every_step and self.bk.DEVICE and opt.clip_norm is not None:
            norm = float(opt.last_grad_norm)  # (every rank reads the same reduced norm)
            if not math.isfinite(norm):
                raise FloatingPointError(f"gradient norm is {norm} at step {st.step + 1}; "
                                         "parameters left unchanged")
        if self.acc is not None and st.epoch_steps - self.checked >= DEVICE_CHECK_EVERY:
            self.sync()
            self.checked = st.epoch_steps

    def local_step(self, lo, hi, start, stop):
        """This process's part of one step: forward and backward on rows [lo, hi) of the
        global batch [start, stop), gradients of the global batch's mean loss left in the
        model's buffer.  Returns the rows' [loss, recon, kl] sums and their count (on a GPU
        the sums stay on the device, in acc: zeros here)."""
        model, m = self.model, hi - lo
        reduce_kl = self.ag.kl_dim_reducer
        if m == 0:  # more ranks than rows in this batch: take part with a zero gradient
            self.batches.skip(start, stop)
            model.noise.skip()  # every rank takes one step of noise per step
            if reduce_kl is not None and model.free_bits > 0:
                reduce_kl(stop - start)(model.kernels.xp.zeros(model.latent_dim,
                                                               dtype=model.dtype), 0)
            model.flat_grads.fill(0)
            return 0.0, 0.0, 0.0, 0
        xb = self.batches.get(lo, hi, start, stop)
        if self.shards is not None:  # (on the host, with free bits off: see state.py)
            sums = self.shards.step(xb, lo - start, stop - start)
            self.check_finite(sums[0] / m)
            return (*sums, m)
        step = StepContext(acc=self.acc, weight=m, row0=lo - start, batch=stop - start,
                           reduce_kl=None if reduce_kl is None else reduce_kl(stop - start))
        cache = model.forward(xb, validate=False, step=step)
        sums = (0.0, 0.0, 0.0, m)
        if self.acc is None:
            loss, recon, kl = cache.values()
            self.check_finite(loss)
            sums = (m * loss, m * recon, m * kl, m)
        model.backward(cache)
        return sums

    def check_finite(self, loss):
        """Raise, before the update, when a step's mean loss is not finite."""
        if not math.isfinite(loss):
            st = self.st
            raise FloatingPointError(
                f"the loss is {loss} at epoch {st.epoch + 1}, step {st.epoch_steps + 1}; "
                f"parameters are unchanged by this step (try a smaller lr, now "
                f"{self.opt.lr})")

    def mark(self):
        """What a step draws or adds before its update: (noise position, binarization
        generator state); on a GPU the device's loss sums are copied aside too."""
        if self.acc is not None:
            self.acc_mark[...] = self.acc
        bits = (self.st.binarize_rng.bit_generator.state
                if self.settings["binarize"] == "dynamic" else None)
        return self.model.noise.mark(), bits

    def rollback(self, mark):
        """Give back a step that did not happen (see :meth:`mark`)."""
        self.model.noise.give_back(mark[0])
        if mark[1] is not None:
            self.st.binarize_rng.bit_generator.state = mark[1]
        if self.acc is not None:
            self.acc[...] = self.acc_mark

    def record(self, stop, n, sums):
        """The step is done: the position moves on and its loss sums are added."""
        st = self.st
        st.row = stop
        st.sums[3] += n
        st.epoch_steps += 1
        st.step += 1
        if self.acc is None:
            st.sums[0] += sums[0]
            st.sums[1] += sums[1]
            st.sums[2] += sums[2]

    def end_epoch(self, last=False):
        """Validation, the record, callbacks and the checkpoint; True to stop.  ``last``:
        the fit's last epoch (its progress line is written whatever LINE_EVERY_S says)."""
        model, st, warm, ag = self.model, self.st, self.warm_steps, self.ag
        beta = model.beta * (kl_scale(st.step, warm) if warm > 0 else 1.0)
        self.hold(AVERAGE)  # validated, kept, given to callbacks and saved: the average
        rec = self.close_epoch(beta)
        if self.acc is not None:
            self.acc[...] = 0
        st.order_rng = self.order_after
        now = time.perf_counter()
        shown = last or self.shown is None or now - self.shown >= LINE_EVERY_S
        self.pending = None if shown else summary(rec)
        if shown:
            self.shown = now
            ag.side(self.out.finish, summary(rec))
        stop, failure = False, None
        try:
            for cb in self.callbacks:
                try:
                    cb(model, rec)
                except StopTraining:
                    stop = True
            if stop and self.pending is not None:  # (a callback's last epoch has its line)
                ag.side(self.out.finish, self.pending)
                self.pending = None
            stopper = st.stopper
            if stopper is not None and not stopper.stopped:
                why = stopper.update(model, rec, st.step)
                if (st.average is not None and (why is not None or "lr" in rec)
                        and stopper.restore_best and stopper.best_params is not None):
                    # (a stop or a plateau's decay put the best average back: the raw
                    # weights go on from it too, as a run without an average would)
                    st.average.other[...] = model.flat_params
                if why is not None:
                    stop = True
                    if self.pending is not None:  # (the epoch that stops the run: its line)
                        ag.side(self.out.finish, self.pending)
                        self.pending = None
                    ag.side(self.out.note, f"early stopping after epoch {rec['epoch']}: "
                            f"{why}" + (f"; the weights of epoch {stopper.best_epoch} are "
                                        f"restored" if stopper.restore_best and
                                        stopper.best_epoch is not None else ""))
            if self.checkpoint is not None:
                model.save(self.checkpoint)
        except BaseException as e:  # noqa: BLE001  (on one rank, even sys.exit: tell all)
            failure = ag.fail(e)
        # a callback's stop or a Ctrl-C on one rank: on all (the loss sums' slot carries
        # the callbacks' stop here)
        return ag.agree(failure, self.guard.hit, (float(stop), 0.0, 0.0, 0))[1][0] > 0

    def close_epoch(self, beta):
        """The record of the epoch's averages (and validation), the position reset.  The
        state changes only once validation is done: if it fails (or is interrupted), the
        next fit closes the same epoch again."""
        model, st = self.model, self.st
        loss, recon, kl, n = st.sums
        secs = st.seconds
        rec = {"epoch": st.epoch + 1, "train_loss": loss / n,
               "train_neg_elbo": (recon + kl) / n, "train_recon": recon / n,
               "train_kl": kl / n, "beta": beta, "steps": st.epoch_steps,
               "train_seconds": secs, "samples_per_s": n / secs if secs > 0 else float("nan")}
        t0 = time.perf_counter()
        stopper = st.stopper
        due = stopper is None or stopper.stopped or stopper.due(st.epoch + 1)
        if self.valset is not None and due:
            ev = elbo(model, self.valset, n_samples=self.settings["val_samples"],
                      validate=False, agreement=self.ag)  # (checked by fit)
            rec.update(val_neg_elbo=ev.neg_elbo, val_recon=ev.recon, val_kl=ev.kl)
        rec["seconds"] = secs + time.perf_counter() - t0
        st.epoch += 1
        st.restart_epoch()
        st.history.append(rec)
        return rec


def kl_scale(step, warm_steps):
    """The KL weight's share at training step ``step`` (counted from 1) of a warm-up over
    ``warm_steps`` steps."""
    return min(1.0, step / warm_steps)


def summary(rec):
    """One epoch's line of progress output."""
    s = (f"epoch {rec['epoch']:3d}  train -elbo {rec['train_neg_elbo']:8.2f} "
         f"(recon {rec['train_recon']:.2f}, kl {rec['train_kl']:.2f})")
    if "val_neg_elbo" in rec:
        s += f"  val -elbo {rec['val_neg_elbo']:8.2f}"
    return s + f"  {rec['seconds']:.1f}s  {rec['samples_per_s']:,.0f} samples/s"
