#include "mdx/train/frame.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>

#include "mdx/io/png.h"
#include "mdx/train/data.h"
#include "mdx/train/distributed.h"
#include "mdx/train/optim.h"
#include "mdx/util/error.h"
#include "mdx/util/log.h"
#include "mdx/util/output.h"
#include "mdx/util/progress.h"
#include "mdx/util/sha256.h"
#include "mdx/util/signal.h"
#include "mdx/util/torch_compat.h"

namespace mdx {

void OptimOptions::add_to(CLI::App& app) {
  app.add_option("--batch", batch, "images per step")->capture_default_str();
  app.add_option("--lr", lr, "learning rate (0: --blr * batch / 256)")->capture_default_str();
  app.add_option("--blr", blr, "base learning rate per 256 images")->capture_default_str();
  app.add_option("--weight-decay", weight_decay, "AdamW weight decay (none on biases, norms, tokens)")
      ->capture_default_str();
  app.add_option("--beta1", beta1, "AdamW beta1")->capture_default_str();
  app.add_option("--beta2", beta2, "AdamW beta2")->capture_default_str();
  app.add_option("--clip", clip, "gradient-norm clipping (0: none)")->capture_default_str();
  app.add_option("--warmup", warmup, "share of the steps spent warming up the learning rate")->capture_default_str();
  app.add_option("--ema", ema, "EMA decay of the weights; 0: none; " + ema_help)->capture_default_str();
}

void OptimOptions::validate() const {
  if (batch < 1) throw UsageError("--batch must be at least 1");
  // Written so that NaN fails every test (NaN compares false).
  if (!(lr >= 0 && weight_decay >= 0 && clip >= 0) || !std::isfinite(lr + weight_decay + clip))
    throw UsageError("--lr, --weight-decay and --clip must be finite and >= 0");
  if (!(blr > 0) || !std::isfinite(blr)) throw UsageError("--blr must be finite and > 0");
  if (!(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1)) throw UsageError("--beta1/--beta2 must lie in [0, 1)");
  if (!(warmup >= 0 && warmup < 1)) throw UsageError("--warmup must lie in [0, 1)");
  if (!(ema == -1 || (ema >= 0 && ema < 1))) throw UsageError("--ema must lie in [0, 1), or be -1");
}

void RunOptions::add_to(CLI::App& app) {
  app.add_option("inputs", inputs, "image table(s) (HDF5), read as one table")->required();
  app.add_option("-o,--output", output, "checkpoint to write (HDF5); metrics and previews go beside it")
      ->required();
  app.add_option("--epochs", epochs, "passes over the table")->capture_default_str();
  app.add_option("--steps", steps, "optimizer steps (instead of --epochs)")->capture_default_str();
  app.add_option("--save-every", save_every, "steps between checkpoints")->capture_default_str();
  app.add_option("--keep-every", keep_every,
                 "steps between checkpoints kept as <stem>.step<N>.h5 beside -o (0: none), for curves along a run")
      ->capture_default_str();
  app.add_option("--log-every", log_every, "steps between metrics lines")->capture_default_str();
  app.add_option("--preview-every", preview_every, "steps between reconstruction previews (0: only at the end)")
      ->capture_default_str();
  app.add_flag("--resume", resume, "continue from the checkpoint at -o");
  app.add_option("--init", init, "start from this checkpoint's weights (fine-tuning under another objective)");
  app.add_flag("--init-ema", init_ema, "with --init: take its EMA weights");
  app.add_option("--benchmark", benchmark, "time this many steps and print JSON; writes nothing")
      ->capture_default_str();
  app.add_option("--peak-tflops", peak_tflops, "the device's peak TFLOP/s, for MFU (0: known GPUs only)")
      ->capture_default_str();
  app.add_option("--memory-budget", memory_budget,
                 "GiB of images held in memory; a larger table is streamed in shuffled windows")
      ->capture_default_str();
  app.add_option("--dist-timeout", dist_timeout,
                 "seconds a data-parallel process waits for the others before failing (a rank died)")
      ->capture_default_str();
}

void RunOptions::validate() const {
  if (benchmark < 0) throw UsageError("--benchmark must be >= 0");
  if (benchmark == 0 && (epochs > 0) == (steps > 0)) throw UsageError("give one of --epochs or --steps");
  if (save_every < 1 || log_every < 1) throw UsageError("--save-every and --log-every must be >= 1");
  if (preview_every < 0) throw UsageError("--preview-every must be >= 0");
  if (keep_every < 0) throw UsageError("--keep-every must be >= 0");
  if (init_ema && init.empty()) throw UsageError("--init-ema goes with --init");
  if (!(dist_timeout > 0)) throw UsageError("--dist-timeout must be > 0");
  if (!(memory_budget > 0)) throw UsageError("--memory-budget must be > 0");
  if (resume && !init.empty()) throw UsageError("--resume continues a run; --init starts a new one: not both");
}


namespace {

std::string beside(const std::string& output, const std::string& suffix) {
  std::string stem = output;
  const std::string ext = lowercase_extension(output);
  if (ext == ".h5" || ext == ".hdf5") stem.resize(stem.size() - ext.size());
  return stem + suffix;
}

double peak_rss_mib() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;
}

class Frame {
 public:
  Frame(Learner& learner, const RunOptions& run, const OptimOptions& optim, const AugmentOptions& augment,
        Provenance& prov)
      : learner_(learner), run_(run), optim_(optim), prov_(prov), table_(plan(learner, run)) {
    optim.validate();
    run.validate();
    augment.validate();
    augment_ = augment.resolve(learner.default_augment());
    latents_ = learner.reads_latents(table_);
    if (latents_ && augment_.any()) {
      if (augment.augment != "auto")
        throw UsageError(fmt::format("--augment {}: the table's pre-extracted latents cannot be cropped or flipped; "
                                     "give --augment none, or train from the images",
                                     augment.augment));
      augment_ = Augment{};  // the objective's augmentation needs images
      log("no augmentation: the batches are the table's pre-extracted latents");
    }
    device_ = at::Device(prov.device);
    dist_ = distributed_from_environment();
    if (dist_.active()) {
      if (optim.batch % dist_.world != 0)
        throw UsageError(fmt::format("--batch {} (the global batch) must be a multiple of the {} processes",
                                     optim.batch, dist_.world));
      if (dist_.rank > 0) set_quiet(true);  // one process logs
      if (device_.is_cuda()) device_ = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(dist_.local_rank));
      comm_ = std::make_unique<Communicator>(
          dist_, std::chrono::milliseconds(static_cast<int64_t>(run.dist_timeout * 1000)));
    }
    rows_.begin = optim.batch * dist_.rank / dist_.world;
    rows_.end = optim.batch * (dist_.rank + 1) / dist_.world;
    if (writer()) AtomicOutput(run.output, run.inputs);  // refuse an unwritable or input -o before any work
    prov.inputs = run.inputs;
    prov.merge_history(table_.history());
    data_ = std::make_unique<TrainingData>(table_, optim.batch, prov.seed,
                                           static_cast<int64_t>(run.memory_budget * (1LL << 30)), latents_,
                                           learner.code_vocabulary());
    // A run continued (--resume) or fine-tuned (--init) keeps the architecture it started with.
    const bool from_checkpoint = !run.init.empty() || run.resume;
    if (from_checkpoint) {
      const std::string& from = run.resume ? run.output : run.init;
      start_ = load_checkpoint(from, !run.resume);
      // The checkpoint of another tool (a model given to a tokenizer fit, or a fit to mdx-train).
      auto fit = start_.config.find("fit");
      const std::string was = fit == start_.config.end() ? "mdx-train" : "mdx-" + fit->second + "-fit";
      if (was != prov.tool)
        throw Error(fmt::format("'{}' is an {} checkpoint, not an {} one", from, was, prov.tool));
      prov.merge_history(start_.history);
    }
    learner.build(table_, data_->num_classes(), from_checkpoint ? &start_ : nullptr, !run.init.empty(), device_,
                  prov);
    if (device_.is_cuda()) compat::enable_tf32();
    spe_ = data_->steps_per_epoch();
    total_ = run.benchmark > 0 ? run.benchmark + 3 : run.steps > 0 ? run.steps : run.epochs * spe_;
    warmup_ = static_cast<int64_t>(std::llround(optim.warmup * total_));
    named_ = learner.module().named_parameters();
    std::vector<std::pair<std::string, at::Tensor>> named;
    for (const auto& p : named_) named.emplace_back(p.key(), p.value());
    AdamWOptions ao;
    ao.beta1 = optim.beta1, ao.beta2 = optim.beta2, ao.weight_decay = optim.weight_decay;
    optimizer_ = std::make_unique<AdamW>(named, ao);
    for (const auto& p : named_) params_.push_back(p.value());
    gen_ = compat::cpu_generator(prov.seed);
    if (!run.init.empty()) init_from(run.init, start_);
    ema_decay_ = optim.ema >= 0 ? optim.ema : learner.default_ema(optim.batch);
    if (ema_decay_ > 0) {
      at::NoGradGuard ng;
      for (const auto& p : named_) ema_[p.key()] = p.value().detach().clone();
    }
    if (run.resume) {
      check_same_run(run.output, start_);
      resume_from(run.output, start_);
    }
    start_ = CheckpointState{};  // its tensors are copied in; free them
    if (comm_) check_ranks_agree();
    if (comm_) {  // every process starts from rank 0's weights
      at::NoGradGuard ng;
      comm_->broadcast(params_);
      std::vector<at::Tensor> ema;
      for (auto& [k, v] : ema_) ema.push_back(v);
      comm_->broadcast(ema);
    }
    log("{}; {} steps of {} ({} per epoch), lr {:.3g}, EMA {}, augment {}, device {} ({})", learner.describe(), total_,
        optim.batch, spe_, optim.base_lr(), ema_decay_ > 0 ? fmt::format("{}", ema_decay_) : std::string("none"),
        augment_.describe(), prov.device, prov.precision);
  }

  std::optional<TrainBenchmark> run() {
    if (run_.benchmark > 0) return benchmark();
    saved_step_ = step_ > 0 ? step_ : -1;
    try {
      train_loop();
    } catch (const Suspended&) {
      throw;  // its checkpoint is written: the metrics and preview belong to it
    } catch (...) {
      if (writer()) {
        try {
          discard_unsaved();
        } catch (...) {  // the first failure is the one to report
        }
      }
      throw;
    }
    return std::nullopt;
  }

 private:
  void train_loop() {
    std::ofstream metrics;
    if (writer()) {
      if (step_ > 0) keep_metrics_until(step_);
      metrics.open(beside(run_.output, ".metrics.jsonl"), step_ > 0 ? std::ios::app : std::ios::trunc);
      if (!metrics) throw Error("cannot write " + beside(run_.output, ".metrics.jsonl"));
    }
    Progress progress("training", total_ - step_, "steps", false);
    auto t0 = std::chrono::steady_clock::now();
    int64_t images_since = 0;
    while (step_ < total_) {
      if (stop_ || (!comm_ && pending_signal() != 0)) {
        if (writer()) save();
        throw Suspended(fmt::format("interrupted by a signal; checkpoint at step {} written to '{}'; continue with --resume",
                                    step_, run_.output));
      }
      Loss loss = train_step(nullptr);
      ++step_;
      images_since += optim_.batch;
      if (writer() && (step_ % run_.log_every == 0 || step_ == total_)) {
        double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (!std::isfinite(loss.total.item<double>()))
          throw Error(fmt::format("the loss is not finite at step {} (lower --lr?)", step_));
        metrics << fmt::format(R"({{"step": {}, "epoch": {:.4f}, "lr": {:.6g}, "loss": {:.6g})", step_,
                               static_cast<double>(step_) / spe_, optimizer_->lr(), loss.total.item<double>());
        for (const auto& [k, v] : loss.terms) metrics << fmt::format(R"(, "{}": {:.6g})", k, v.item<double>());
        for (const auto& [k, v] : learner_.metrics()) metrics << fmt::format(R"(, "{}": {:.6g})", k, v);
        metrics << fmt::format(R"(, "grad_norm": {:.6g}, "images_per_s": {:.1f}}})", grad_norm_,
                               images_since / std::max(secs, 1e-9))
                << "\n";
        metrics.flush();
        t0 = std::chrono::steady_clock::now();
        images_since = 0;
      }
      if (writer() && run_.preview_every > 0 && step_ % run_.preview_every == 0) preview();
      if (writer() && (step_ % run_.save_every == 0 || kept(step_)) && step_ < total_) save();
      progress.advance();
    }
    progress.finish();
    if (!writer()) return;
    preview();
    save();
    log("wrote {} (step {}); metrics in {}", run_.output, step_, beside(run_.output, ".metrics.jsonl"));
  }

  // A run that fails leaves no side file ahead of its checkpoint: without one (a fresh run that
  // failed before its first save) the metrics and preview go; with one, the metrics keep the lines
  // up to its step, as --resume would.
  void discard_unsaved() {
    const std::string metrics = beside(run_.output, ".metrics.jsonl");
    if (saved_step_ < 0) {
      ::unlink(metrics.c_str());  // files only: never a directory of that name
      ::unlink(beside(run_.output, ".preview.png").c_str());
    } else {
      keep_metrics_until(saved_step_);
    }
  }

  // Every file the run reads and writes, checked before the table is even opened; returns the
  // tables. (A resumed checkpoint is read and rewritten: it is the run's own output.)
  static const std::vector<std::string>& plan(const Learner& learner, const RunOptions& run) {
    FilePlan files;
    files.read(run.inputs).read(run.init, "--init");
    for (const auto& [path, what] : learner.reads()) files.read(path, what);
    files.write(run.output, "the checkpoint (-o)")
        .write(beside(run.output, ".metrics.jsonl"), "its metrics file")
        .write(beside(run.output, ".preview.png"), "its preview")
        .check();
    return run.inputs;
  }

  void init_from(const std::string& path, const CheckpointState& s) {
    const auto& weights = run_.init_ema && !s.ema.empty() ? s.ema : s.model;
    const std::vector<std::string> fresh = copy_weights(learner_.module(), weights, path, false);
    const auto copied = static_cast<int64_t>(named_.size() - fresh.size());
    log("initialized {} tensors from '{}'{}", copied, path,
        fresh.empty() ? std::string() : fmt::format("; {} new ({}...)", fresh.size(), fresh[0]));
    prov_.add_input(path);
  }

  void resume_from(const std::string& path, const CheckpointState& s) {
    copy_weights(learner_.module(), s.model, path, true);
    at::NoGradGuard ng;
    // A resumed run continues exactly or not at all: a tensor missing from, or shaped otherwise
    // in, the EMA or the optimizer state of the checkpoint is damage.
    auto take = [&](at::Tensor& into, const std::map<std::string, at::Tensor>& from, const std::string& group,
                    const std::string& name) {
      auto it = from.find(name);
      if (it == from.end() || it->second.sizes() != into.sizes())
        throw Error(fmt::format("'{}': {}/{} is {}; the file is damaged", path, group, name,
                                it == from.end() ? "missing" : "of another shape"));
      into.copy_(it->second);
    };
    if (!s.ema.empty())
      for (auto& [name, value] : ema_) take(value, s.ema, "ema", name);
    if (!s.exp_avg.empty() || !s.exp_avg_sq.empty()) {
      for (auto& slot : optimizer_->slots()) {
        take(slot.exp_avg, s.exp_avg, "optimizer/exp_avg", slot.name);
        take(slot.exp_avg_sq, s.exp_avg_sq, "optimizer/exp_avg_sq", slot.name);
        slot.step = s.adam_steps.at(slot.name);
      }
    }
    if (s.rng.defined()) {
      try {
        gen_.set_state(s.rng);
      } catch (const c10::Error&) {
        throw Error(fmt::format("'{}': its generator state 'rng' ({} bytes) is damaged", path, s.rng.numel()));
      }
    }
    step_ = s.step;
    if (step_ >= total_) log("'{}' is already at step {} of {}", path, step_, total_);
    else log("resuming '{}' at step {} of {}", path, step_, total_);
  }

  // The batch of `step` as the model sees it: each row cropped and flipped as drawn for (seed, step,
  // row), so a resumed run and every rank see the same images.
  at::Tensor augmented(const at::Tensor& images, int64_t step) const {
    at::Tensor src = images.contiguous();
    const int64_t B = src.size(0), H = src.size(1), W = src.size(2), C = src.size(3);
    at::Tensor out = at::empty_like(src);
    const uint8_t* in = src.data_ptr<uint8_t>();
    uint8_t* dst = out.data_ptr<uint8_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const CropBox box = augment_.draw(H, W, prov_.seed, step, i);
        resized_crop(in + i * H * W * C, H, W, C, box, dst + i * H * W * C, H, W);
      }
    });
    return out;
  }

  Loss train_step(StepWork* work) {
    optimizer_->set_lr(warmup_cosine_lr(optim_.base_lr(), step_, warmup_, total_));
    BatchRows batch;
    data_->batch(step_, batch.images, batch.labels, &batch.mean, &batch.logvar, &batch.codes);
    if (augment_.any()) batch.images = augmented(batch.images, step_);
    Loss loss = learner_.loss(batch, step_, total_, gen_, rows_, prov_.precision == "bf16", work);
    optimizer_->zero_grad();
    loss.total.backward();
    if (comm_) reduce(loss);
    grad_norm_ = clip_grad_norm(params_, optim_.clip);
    optimizer_->step();
    learner_.after_step(comm_.get());
    at::NoGradGuard ng;
    if (ema_decay_ > 0)
      for (const auto& p : named_) ema_[p.key()].mul_(ema_decay_).add_(p.value().detach(), 1 - ema_decay_);
    return loss;
  }

  void preview() {
    at::Tensor images, labels;
    data_->head(8, images, labels);
    std::string columns;
    Grid grid = learner_.preview(images, labels, step_, total_, columns);
    auto text = prov_.fields();
    text.push_back({"mdx_step", std::to_string(step_)});
    text.push_back({"mdx_columns", columns});
    for (const auto& kv : grid_layout_text(grid)) text.push_back(kv);
    const std::string path = beside(run_.output, ".preview.png");
    AtomicOutput out_png(path, run_.inputs);
    write_png(out_png.temp_path(), grid.pixels.data(), grid.height, grid.width, 3, text);
    out_png.commit();
  }

  // The configuration a checkpoint records: the learner's and the optimizer's.
  std::map<std::string, std::string> run_config() const {
    std::map<std::string, std::string> c = learner_.config();
    c["lr"] = fmt::format("{}", optim_.base_lr());
    c["weight_decay"] = fmt::format("{}", optim_.weight_decay);
    c["betas"] = fmt::format("{},{}", optim_.beta1, optim_.beta2);
    c["clip"] = fmt::format("{}", optim_.clip);
    c["warmup"] = fmt::format("{}", optim_.warmup);
    c["ema"] = fmt::format("{}", ema_decay_);
    c["augment"] = augment_.describe();
    c["seed"] = std::to_string(prov_.seed);
    c["total_steps"] = std::to_string(total_);
    c["batch"] = std::to_string(optim_.batch);
    if (!table_.label_names().empty()) c["label_names"] = fmt::format("{}", fmt::join(table_.label_names(), "\n"));
    return c;
  }

  // A --resume run must be the run it continues: other options would silently change its
  // objective or optimizer halfway (a Slurm requeue passes the same command line again). Only
  // the length may change: a longer --steps extends a finished run (see mdx-train(1)).
  void check_same_run(const std::string& path, const CheckpointState& s) const {
    auto setting = [&](const char* key) {
      auto it = s.config.find(key);
      return it == s.config.end() ? std::string("?") : it->second;
    };
    const std::string was = setting("height") + "x" + setting("width") + "x" + setting("channels");
    const std::string now = fmt::format("{}x{}x{}", table_.height(), table_.width(), table_.channels());
    if (was != now)  // not an option given otherwise: another table
      throw Error(fmt::format("--resume: '{}' was trained on {} images, '{}' holds {}", path, was,
                              fmt::join(run_.inputs, "', '"), now));
    std::vector<std::string> diffs;
    for (const auto& [key, now] : run_config()) {
      if (key == "total_steps") continue;
      auto it = s.config.find(key);
      if (it != s.config.end() && it->second != now)
        diffs.push_back(key == "label_names" ? "the table's label names differ"
                                             : fmt::format("{} {}, not {}", key, it->second, now));
    }
    if (!diffs.empty())
      throw Error(fmt::format("--resume: '{}' was trained with other options ({}); give the options of that run again",
                              path, fmt::join(diffs, "; ")));
  }

  // Every process must run the same configuration: each compares the SHA-256 of its own (options,
  // architecture, table size) with rank 0's, and all fail together with one line, before any
  // tensor whose shape could differ is exchanged.
  void check_ranks_agree() {
    std::string text = "rows=" + std::to_string(table_.size()) + "\n";
    for (const auto& [k, v] : run_config()) text += k + "=" + v + "\n";
    const std::string hex = sha256_bytes(text.data(), text.size());
    at::Tensor mine = at::empty({16}, at::kFloat);  // 16-bit words: exact in float32
    for (int64_t i = 0; i < 16; ++i)
      mine[i] = static_cast<float>(std::stoul(hex.substr(static_cast<size_t>(4 * i), 4), nullptr, 16));
    at::Tensor ref = mine.clone();
    comm_->broadcast({ref});
    at::Tensor differ = at::full({1}, ref.equal(mine) ? 0.0f : 1.0f);
    comm_->all_reduce_sum({differ});
    const auto n = static_cast<int64_t>(differ.item<float>());
    if (n > 0)
      throw Error(fmt::format("{} of the {} processes were started with other options or tables than rank 0 "
                              "(this one {}); give every rank the same command line",
                              n, dist_.world, ref.equal(mine) ? "agrees with rank 0" : "differs"));
  }

  void save() {
    // A kept step is a whole checkpoint under its own name (--resume or --init read it as they
    // read -o); the final step is -o itself. Its name is known only now: it must not be an input.
    const bool keep = kept(step_) && step_ < total_;
    if (keep) {
      FilePlan files;
      files.read(run_.inputs).read(run_.init, "--init");
      for (const auto& [path, what] : learner_.reads()) files.read(path, what);
      files.write(kept_name(step_), "the kept checkpoint (--keep-every)").check();
    }
    CheckpointState s;
    for (const auto& p : learner_.module().named_parameters()) s.model[p.key()] = p.value();
    for (const auto& b : learner_.module().named_buffers()) s.model[b.key()] = b.value();
    s.ema = ema_;
    for (const auto& slot : optimizer_->slots()) {
      s.exp_avg[slot.name] = slot.exp_avg;
      s.exp_avg_sq[slot.name] = slot.exp_avg_sq;
      s.adam_steps[slot.name] = slot.step;
    }
    s.step = step_;
    s.rng = gen_.get_state();
    s.config = run_config();
    learner_.save_into(s);
    std::vector<std::string> inputs = run_.inputs;
    if (!run_.init.empty()) inputs.push_back(run_.init);
    save_checkpoint(run_.output, s, prov_, inputs);
    saved_step_ = step_;
    if (keep) save_checkpoint(kept_name(step_), s, prov_, inputs);
  }

  bool kept(int64_t step) const { return run_.keep_every > 0 && step % run_.keep_every == 0; }
  std::string kept_name(int64_t step) const { return beside(run_.output, fmt::format(".step{}.h5", step)); }

  TrainBenchmark benchmark() {
    const int64_t warm = 3, n = run_.benchmark;
    for (int64_t i = 0; i < warm; ++i, ++step_) train_step(nullptr);
    if (device_.is_cuda()) compat::synchronize(device_);
    auto t0 = std::chrono::steady_clock::now();
    int64_t kept_tokens = 0;
    double flops = 0;
    for (int64_t i = 0; i < n; ++i, ++step_) {
      StepWork work;
      train_step(&work);
      kept_tokens += work.encoder_tokens;
      flops += work.flops;
    }
    if (device_.is_cuda()) compat::synchronize(device_);
    TrainBenchmark r;
    r.tool = prov_.tool;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.commit = git_commit(), r.libtorch = libtorch_version(), r.device = prov_.device;
    r.precision = prov_.precision;
    r.objective = learner_.name(), r.model = learner_.model_name();
    r.parameters = parameter_count(), r.batch = optim_.batch, r.steps = n, r.threads = at::get_num_threads();
    r.images_per_s = static_cast<double>(n * optim_.batch) / r.seconds;
    r.encoder_tokens_per_s = static_cast<double>(kept_tokens) / r.seconds;
    r.tflops = flops / r.seconds / 1e12;
    r.step_gflop = flops / static_cast<double>(std::max<int64_t>(n, 1)) / 1e9;
    const double peak = run_.peak_tflops > 0 ? run_.peak_tflops : compat::peak_tflops(device_);
    if (peak > 0) r.mfu = r.tflops / peak;
    r.peak_memory_mib = device_.is_cuda() ? compat::peak_memory_mib(device_) : peak_rss_mib();
    return r;
  }

  // Sums the gradients, the loss terms and the stop flag over the processes: the losses are
  // normalized by whole-batch counts, so the sums are the whole batch's values.
  void reduce(Loss& loss) {
    std::vector<at::Tensor> all;
    for (auto& p : params_) {
      if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
      all.push_back(p.grad());
    }
    at::Tensor scalars = at::zeros({static_cast<int64_t>(loss.terms.size()) + 2}, at::kFloat);
    scalars[0] = loss.total.detach().to(at::kCPU).to(at::kFloat);
    for (size_t i = 0; i < loss.terms.size(); ++i)
      scalars[static_cast<int64_t>(i) + 1] = loss.terms[i].second.detach().to(at::kCPU).to(at::kFloat);
    scalars[scalars.size(0) - 1] = pending_signal() != 0 ? 1.0f : 0.0f;
    all.push_back(scalars);
    comm_->all_reduce_sum(all);
    loss.total = scalars[0];
    for (size_t i = 0; i < loss.terms.size(); ++i) loss.terms[i].second = scalars[static_cast<int64_t>(i) + 1];
    stop_ = scalars[scalars.size(0) - 1].item<float>() > 0;
  }

  bool writer() const { return dist_.rank == 0; }

  // A resumed run drops the lines a killed run logged after its last checkpoint, so each step
  // appears once.
  void keep_metrics_until(int64_t step) {
    const std::string path = beside(run_.output, ".metrics.jsonl");
    std::ifstream in(path);
    if (!in) return;
    std::string kept;
    for (std::string line; std::getline(in, line);) {
      auto at = line.find("\"step\": ");
      if (at == std::string::npos) continue;  // not a metrics line: a torn or foreign one goes
      char* end = nullptr;
      const long long logged = std::strtoll(line.c_str() + at + 8, &end, 10);
      if (end != line.c_str() + at + 8 && logged <= step) kept += line + "\n";
    }
    in.close();
    std::ofstream(path, std::ios::trunc) << kept;
  }

  int64_t parameter_count() const {
    int64_t n = 0;
    for (const auto& p : named_) n += p.value().numel();
    return n;
  }

  Learner& learner_;
  const RunOptions& run_;
  const OptimOptions& optim_;
  Provenance& prov_;
  ImageTable table_;
  at::Device device_{at::kCPU};
  torch::OrderedDict<std::string, at::Tensor> named_;
  std::vector<at::Tensor> params_;
  std::map<std::string, at::Tensor> ema_;
  std::unique_ptr<AdamW> optimizer_;
  CheckpointState start_;  // the checkpoint a --resume or --init run starts from
  DistributedEnv dist_;
  std::unique_ptr<Communicator> comm_;
  RowRange rows_;          // this process's rows of each batch
  bool stop_ = false;      // a signal reached some process: all stop after this step
  at::Generator gen_;
  std::unique_ptr<TrainingData> data_;
  int64_t spe_ = 1, total_ = 0, warmup_ = 0, step_ = 0;
  int64_t saved_step_ = -1;  // the step of the checkpoint under -o; -1 while there is none
  double ema_decay_ = 0;     // --ema, or the learner's default; 0: no EMA kept
  Augment augment_;          // --augment, or the learner's
  bool latents_ = false;     // the batches are the table's pre-extracted latents
  double grad_norm_ = 0;
};

}  // namespace

std::string TrainBenchmark::to_json() const {
  return fmt::format(R"({{"tool": "{}", "commit": "{}", "libtorch": "{}", "device": "{}", "precision": "{}", )"
                     R"("objective": "{}", )"
                     R"("model": "{}", "parameters": {}, "batch": {}, "steps": {}, "seconds": {:.4f}, )"
                     R"("step_ms": {:.3f}, "images_per_s": {:.2f}, "encoder_tokens_per_s": {:.1f}, )"
                     R"("step_gflop": {:.6g}, "tflops": {:.4f}, "mfu": {}, "peak_memory_mib": {:.1f}, "threads": {}}})",
                     tool, commit, libtorch, device, precision, objective, model, parameters, batch, steps, seconds,
                     1000 * seconds / static_cast<double>(std::max<int64_t>(steps, 1)), images_per_s,
                     encoder_tokens_per_s, step_gflop, tflops, mfu ? fmt::format("{:.4f}", *mfu) : std::string("null"),
                     peak_memory_mib, threads);
}

std::optional<TrainBenchmark> run_training(Learner& learner, const RunOptions& run, const OptimOptions& optim,
                                           const AugmentOptions& augment, Provenance& prov) {
  std::unique_ptr<Frame> frame;
  try {
    frame = std::make_unique<Frame>(learner, run, optim, augment, prov);
  } catch (const Interrupted&) {
    // A signal while the table loads: nothing trained, nothing written, and the exit status
    // the requeue recipe tests for (mdx(7): a first signal never ends a training with 130/143).
    throw Suspended(run.resume
                        ? fmt::format("interrupted by a signal while loading; '{}' is unchanged; continue with --resume",
                                      run.output)
                        : std::string("interrupted by a signal while loading, before the first step; nothing written"));
  }
  return frame->run();
}

}  // namespace mdx
