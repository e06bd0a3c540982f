#include "mdx/train/train.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>
#include <torch/torch.h>

#include <chrono>
#include <csignal>
#include <cmath>
#include <fstream>
#include <iostream>

#include "mdx/io/grid.h"
#include "mdx/io/image_table.h"
#include "mdx/io/png.h"
#include "mdx/model/autoencoder.h"
#include "mdx/tokenize/patches.h"
#include "mdx/tokenize/tokenizer.h"
#include "mdx/train/checkpoint.h"
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

void LabelOptions::add_to(CLI::App& app) {
  app.add_flag("--class-cond", class_cond, "condition on the table's labels (with a null class for guidance)");
  app.add_option("--class-dropout", class_dropout, "probability that a label is replaced by the null class")
      ->capture_default_str();
}

void LabelOptions::validate() const {
  if (!(class_dropout >= 0 && class_dropout < 1)) throw UsageError("--class-dropout must lie in [0, 1)");
}

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
  app.add_option("--ema", ema,
                 "EMA decay of the weights; 0: none; -1: the objective's (umd: 1 - 1e-4 batch/256 with "
                 "--class-cond, else none; mae: none; dit, ldae: 0.9999)")
      ->capture_default_str();
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
  if (init_ema && init.empty()) throw UsageError("--init-ema goes with --init");
  if (!(dist_timeout > 0)) throw UsageError("--dist-timeout must be > 0");
  if (!(memory_budget > 0)) throw UsageError("--memory-budget must be > 0");
  if (resume && !init.empty()) throw UsageError("--resume continues a run; --init starts a new one: not both");
}

void TrainOptions::add_to(CLI::App& app) {
  run.add_to(app);
  objective.add_to(app, true);
  labels.add_to(app);
  model.add_to(app);
  optim.add_to(app);
  augment.add_to(app);
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

class Trainer {
 public:
  Trainer(const TrainOptions& opt, Provenance& prov) : opt_(opt), prov_(prov), table_(plan(opt)) {
    opt.optim.validate();
    opt.run.validate();
    opt.labels.validate();
    opt.augment.validate();
    objective_ = opt.objective.make();
    augment_ = opt.augment.resolve(objective_->default_augment(opt.labels.class_cond));
    device_ = at::Device(prov.device);
    dist_ = distributed_from_environment();
    if (dist_.active()) {
      if (opt.optim.batch % dist_.world != 0)
        throw UsageError(fmt::format("--batch {} (the global batch) must be a multiple of the {} processes",
                                     opt.optim.batch, dist_.world));
      if (dist_.rank > 0) set_quiet(true);  // one process logs
      if (device_.is_cuda()) device_ = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(dist_.local_rank));
      comm_ = std::make_unique<Communicator>(
          dist_, std::chrono::milliseconds(static_cast<int64_t>(opt.run.dist_timeout * 1000)));
    }
    rows_.begin = opt.optim.batch * dist_.rank / dist_.world;
    rows_.end = opt.optim.batch * (dist_.rank + 1) / dist_.world;
    if (writer()) AtomicOutput(opt.run.output, opt.run.inputs);  // refuse an unwritable or input -o before any work
    prov.inputs = opt.run.inputs;
    prov.merge_history(table_.history());
    if (opt.labels.class_cond && !table_.has_labels())
      throw Error("--class-cond needs labels, and '" + opt.run.inputs[0] + "' has none");
    data_ = std::make_unique<TrainingData>(table_, opt.optim.batch, prov.seed,
                                           static_cast<int64_t>(opt.run.memory_budget * (1LL << 30)));
    num_classes_ = data_->num_classes();
    model_cfg_ = opt.model;
    if (!opt.run.init.empty() || opt.run.resume) adopt_architecture();
    objective_->bind(given_tokenizer(), model_cfg_.patch);
    model_cfg_.set_geometry(objective_->tokenizer()->geometry(table_.height(), table_.width(), table_.channels()));
    if (auto latent = objective_->latent()) latent->geometry(table_.height(), table_.width(), table_.channels());
    model_cfg_.num_classes = opt.labels.class_cond ? num_classes_ : 0;
    // UMD's own model form where the objective is umd (small-vision's ae.py): learned positions and
    // one conditioning vector, shared when the decoder is as wide as the encoder (as UMD's is).
    const bool umd = objective_->name() == "umd";
    if (model_cfg_.positions == "auto") model_cfg_.positions = umd ? "learned" : "sincos";
    if (model_cfg_.condition == "auto")
      model_cfg_.condition =
          umd && (model_cfg_.decoder_dim == 0 || model_cfg_.decoder_dim == model_cfg_.dim) ? "shared" : "separate";
    model_cfg_.timesteps = objective_->settings().steps;
    model_cfg_.resolve();
    model_ = MaskedDiffusionAutoencoder(model_cfg_);
    model_->to(device_);
    if (device_.is_cuda()) compat::enable_tf32();
    spe_ = data_->steps_per_epoch();
    total_ = opt.run.benchmark > 0 ? opt.run.benchmark + 3
             : opt.run.steps > 0   ? opt.run.steps
                                   : opt.run.epochs * spe_;
    warmup_ = static_cast<int64_t>(std::llround(opt.optim.warmup * total_));
    named_ = model_->named_parameters();
    std::vector<std::pair<std::string, at::Tensor>> named;
    for (const auto& p : named_) named.emplace_back(p.key(), p.value());
    AdamWOptions ao;
    ao.beta1 = opt.optim.beta1, ao.beta2 = opt.optim.beta2, ao.weight_decay = opt.optim.weight_decay;
    optimizer_ = std::make_unique<AdamW>(named, ao);
    for (const auto& p : named_) params_.push_back(p.value());
    gen_ = compat::cpu_generator(prov.seed);
    if (!opt.run.init.empty()) init_from(opt.run.init, start_);
    ema_decay_ = opt.optim.ema >= 0 ? opt.optim.ema : objective_->default_ema(opt.labels.class_cond, opt.optim.batch);
    if (ema_decay_ > 0) {
      at::NoGradGuard ng;
      for (const auto& p : named_) ema_[p.key()] = p.value().detach().clone();
    }
    if (opt.run.resume) {
      check_same_run(opt.run.output, start_);
      resume_from(opt.run.output, start_);
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
    log("{}: {} images {}x{}x{}, {} tokens of {} values ({}); model {} ({:.1f}M parameters: {} wide, {}+{} blocks); "
        "{} steps of {} ({} per epoch), lr {:.3g}, EMA {}, augment {}, device {} ({})",
        objective_->name(), table_.size(), model_cfg_.height, model_cfg_.width, model_cfg_.channels,
        model_cfg_.tokens(), model_cfg_.token_dim(), objective_->tokenizer()->describe(), model_cfg_.preset,
        parameter_count() / 1e6, model_cfg_.dim, model_cfg_.depth, model_cfg_.decoder_depth, total_, opt.optim.batch, spe_, opt.optim.base_lr(),
        ema_decay_ > 0 ? fmt::format("{}", ema_decay_) : std::string("none"), augment_.describe(), prov.device, prov.precision);
  }

  std::optional<TrainBenchmark> run() {
    if (opt_.run.benchmark > 0) return benchmark();
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
      metrics.open(beside(opt_.run.output, ".metrics.jsonl"), step_ > 0 ? std::ios::app : std::ios::trunc);
      if (!metrics) throw Error("cannot write " + beside(opt_.run.output, ".metrics.jsonl"));
    }
    Progress progress("training", total_ - step_, "steps", false);
    auto t0 = std::chrono::steady_clock::now();
    int64_t images_since = 0;
    while (step_ < total_) {
      if (stop_ || (!comm_ && pending_signal() != 0)) {
        if (writer()) save();
        throw Suspended(fmt::format("interrupted by a signal; checkpoint at step {} written to '{}'; continue with --resume",
                                    step_, opt_.run.output));
      }
      Loss loss = train_step();
      ++step_;
      images_since += opt_.optim.batch;
      if (writer() && (step_ % opt_.run.log_every == 0 || step_ == total_)) {
        double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (!std::isfinite(loss.total.item<double>()))
          throw Error(fmt::format("the loss is not finite at step {} (lower --lr?)", step_));
        metrics << fmt::format(R"({{"step": {}, "epoch": {:.4f}, "lr": {:.6g}, "loss": {:.6g})", step_,
                               static_cast<double>(step_) / spe_, optimizer_->lr(), loss.total.item<double>());
        for (const auto& [k, v] : loss.terms) metrics << fmt::format(R"(, "{}": {:.6g})", k, v.item<double>());
        metrics << fmt::format(R"(, "grad_norm": {:.6g}, "images_per_s": {:.1f}}})", grad_norm_,
                               images_since / std::max(secs, 1e-9))
                << "\n";
        metrics.flush();
        t0 = std::chrono::steady_clock::now();
        images_since = 0;
      }
      if (writer() && opt_.run.preview_every > 0 && step_ % opt_.run.preview_every == 0) preview();
      if (writer() && step_ % opt_.run.save_every == 0 && step_ < total_) save();
      progress.advance();
    }
    progress.finish();
    if (!writer()) return;
    preview();
    save();
    log("wrote {} (step {}); metrics in {}", opt_.run.output, step_, beside(opt_.run.output, ".metrics.jsonl"));
  }

  // A run that fails leaves no side file ahead of its checkpoint: without one (a fresh run that
  // failed before its first save) the metrics and preview go; with one, the metrics keep the lines
  // up to its step, as --resume would.
  void discard_unsaved() {
    const std::string metrics = beside(opt_.run.output, ".metrics.jsonl");
    if (saved_step_ < 0) {
      ::unlink(metrics.c_str());  // files only: never a directory of that name
      ::unlink(beside(opt_.run.output, ".preview.png").c_str());
    } else {
      keep_metrics_until(saved_step_);
    }
  }

  // Every file the run reads and writes, checked before the table is even opened; returns the
  // tables. (A resumed checkpoint is read and rewritten: it is the run's own output.)
  static const std::vector<std::string>& plan(const TrainOptions& opt) {
    FilePlan()
        .read(opt.run.inputs)
        .read(opt.run.init, "--init")
        .read(opt.objective.tokenizer, "--tokenizer")
        .write(opt.run.output, "the checkpoint (-o)")
        .write(beside(opt.run.output, ".metrics.jsonl"), "its metrics file")
        .write(beside(opt.run.output, ".preview.png"), "its preview")
        .check();
    return opt.run.inputs;
  }

  // A run continued (--resume) or fine-tuned (--init) keeps the architecture it started with.
  void adopt_architecture() {
    const std::string& from = opt_.run.resume ? opt_.run.output : opt_.run.init;
    start_ = load_checkpoint(from, !opt_.run.resume);
    const CheckpointState& s = start_;
    prov_.merge_history(s.history);
    ModelConfig prev = ModelConfig::from_map(s.config);
    model_cfg_.preset = prev.preset, model_cfg_.patch = prev.patch, model_cfg_.dim = prev.dim;
    model_cfg_.depth = prev.depth, model_cfg_.heads = prev.heads, model_cfg_.decoder_dim = prev.decoder_dim;
    model_cfg_.decoder_depth = prev.decoder_depth, model_cfg_.decoder_heads = prev.decoder_heads;
    model_cfg_.mlp_ratio = prev.mlp_ratio, model_cfg_.cls_tokens = prev.cls_tokens;
    model_cfg_.positions = prev.positions, model_cfg_.condition = prev.condition;
  }

  // The tokenizer the objective binds to: --tokenizer; else, continuing a run, the one it
  // recorded (the latent where it noises in one); else, fine-tuning, the token space the model
  // worked in; else none (pixel patches of --patch). Checkpoints that carry none are read as pixels.
  std::shared_ptr<const Tokenizer> given_tokenizer() {
    const std::string& path = opt_.objective.tokenizer;
    if (!path.empty()) {
      prov_.add_input(path);
      return load_tokenizer_file(path);
    }
    if (opt_.run.resume) return start_.latent ? start_.latent : start_.tokenizer;
    if (!opt_.run.init.empty()) return start_.tokenizer;
    return nullptr;
  }

  void init_from(const std::string& path, const CheckpointState& s) {
    const auto& weights = opt_.run.init_ema && !s.ema.empty() ? s.ema : s.model;
    const std::vector<std::string> fresh = copy_weights(*model_, weights, path, false);
    const auto copied = static_cast<int64_t>(model_->named_parameters().size() - fresh.size());
    log("initialized {} tensors from '{}'{}", copied, path,
        fresh.empty() ? std::string() : fmt::format("; {} new ({}...)", fresh.size(), fresh[0]));
    prov_.add_input(path);
  }

  void resume_from(const std::string& path, const CheckpointState& s) {
    copy_weights(*model_, s.model, path, true);
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

  struct Batch {
    at::Tensor x0, labels;
    Corrupted corrupted;
  };

  Batch make_batch(int64_t step) {
    Batch b;
    at::Tensor images, labels;
    data_->batch(step, images, labels);
    if (augment_.any()) images = augmented(images, step);
    b.x0 = objective_->tokenizer()->encode(images);
    b.corrupted = objective_->sample(b.x0, step, total_, gen_);
    if (model_cfg_.num_classes > 0) {
      b.labels = labels;
      at::Tensor drop = at::rand({labels.size(0)}, gen_) < opt_.labels.class_dropout;
      // Representation-step rows (UMD's clean, masked rows) are label-free: small-vision's
      // no-noise call passes no label, which its model turns into the null class.
      drop |= b.corrupted.representation;
      b.labels = at::where(drop, at::full_like(b.labels, model_cfg_.num_classes), b.labels);
    }
    return b;
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

  // The model on rows [r.begin, r.end) of the batch (all rows by default).
  ModelOutput forward(const Batch& b, RowRange r = {}) {
    if (r.end < 0) r.end = b.corrupted.xt.size(0);
    auto rows = [&](const at::Tensor& t) { return t.slice(0, r.begin, r.end).to(device_); };
    ModelInput in;
    in.tokens = rows(b.corrupted.xt);
    in.time_index = rows(b.corrupted.time_index);
    if (b.labels.defined()) in.labels = rows(b.labels);
    in.dropped = rows(b.corrupted.dropped);
    in.masked = rows(b.corrupted.masked);
    return model_->forward(in);
  }

  Loss train_step() {
    optimizer_->set_lr(warmup_cosine_lr(opt_.optim.base_lr(), step_, warmup_, total_));
    Batch b = make_batch(step_);
    if (opt_.run.benchmark > 0) count_work(b);
    // Every process corrupts the whole batch alike (same generator) and runs the model on its rows.
    ModelOutput out;
    {
      compat::Autocast autocast(device_, prov_.precision == "bf16");
      out = forward(b, rows_);
    }
    Loss loss = objective_->loss(b.corrupted, b.x0.slice(0, rows_.begin, rows_.end).to(device_), out, rows_);
    optimizer_->zero_grad();
    loss.total.backward();
    if (comm_) reduce(loss);
    grad_norm_ = clip_grad_norm(params_, opt_.optim.clip);
    optimizer_->step();
    at::NoGradGuard ng;
    if (ema_decay_ > 0)
      for (const auto& p : named_) ema_[p.key()].mul_(ema_decay_).add_(p.value().detach(), 1 - ema_decay_);
    return loss;
  }

  // Reconstructions of 8 fixed training images: clean, corrupted input (masks marked), x0 prediction.
  void preview() {
    at::NoGradGuard ng;
    model_->eval();
    at::Generator g = compat::cpu_generator(12345);
    Batch b;
    at::Tensor images, labels;
    data_->head(8, images, labels);
    b.x0 = objective_->tokenizer()->encode(images);
    b.corrupted = objective_->sample(b.x0, step_, total_, g);
    if (model_cfg_.num_classes > 0) b.labels = labels;
    ModelOutput out = forward(b);
    model_->train();
    const TokenGeometry geometry = model_cfg_.geometry();
    at::Tensor x0_hat = objective_->predicted_x0(b.corrupted, out).to(at::kCPU).to(at::kFloat);
    // Visible tokens shown as given, masked ones as predicted.
    at::Tensor pasted = at::where(b.corrupted.masked.unsqueeze(-1), x0_hat, b.corrupted.xt);
    std::vector<at::Tensor> cols = {b.x0, b.corrupted.xt, x0_hat, pasted};
    std::vector<at::Tensor> cells, marks;
    at::Tensor none = at::zeros_like(b.corrupted.masked);
    for (size_t k = 0; k < cols.size(); ++k) {
      cells.push_back(to_uint8(objective_->tokenizer()->decode(cols[k], geometry)));
      marks.push_back(k == 1 ? b.corrupted.masked : none);
    }
    at::Tensor drops = at::stack({none, b.corrupted.dropped, none, none}, 1);
    Grid grid = render_grid(at::stack(cells, 1), at::stack(marks, 1), drops, geometry.cell_h(), 0);
    auto text = prov_.fields();
    text.push_back({"mdx_step", std::to_string(step_)});
    text.push_back({"mdx_columns", "clean; corrupted input (masked patches coloured); x0 prediction; "
                                   "prediction pasted into the masked patches"});
    const std::string path = beside(opt_.run.output, ".preview.png");
    AtomicOutput out_png(path, opt_.run.inputs);
    write_png(out_png.temp_path(), grid.pixels.data(), grid.height, grid.width, 3, text);
    out_png.commit();
  }

  // The configuration a checkpoint records: the model's, the objective's and the optimizer's.
  std::map<std::string, std::string> run_config() const {
    std::map<std::string, std::string> c = model_cfg_.to_map();
    for (const auto& [k, v] : objective_->config()) c[k] = v;
    c["class_dropout"] = fmt::format("{}", opt_.labels.class_dropout);
    c["lr"] = fmt::format("{}", opt_.optim.base_lr());
    c["weight_decay"] = fmt::format("{}", opt_.optim.weight_decay);
    c["betas"] = fmt::format("{},{}", opt_.optim.beta1, opt_.optim.beta2);
    c["clip"] = fmt::format("{}", opt_.optim.clip);
    c["warmup"] = fmt::format("{}", opt_.optim.warmup);
    c["ema"] = fmt::format("{}", ema_decay_);
    c["augment"] = augment_.describe();
    c["seed"] = std::to_string(prov_.seed);
    c["tokenizer_identity"] = objective_->tokenizer()->identity();
    if (auto latent = objective_->latent()) c["latent_identity"] = latent->identity();
    c["total_steps"] = std::to_string(total_);
    c["batch"] = std::to_string(opt_.optim.batch);
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
                              fmt::join(opt_.run.inputs, "', '"), now));
    std::vector<std::string> diffs;
    for (const auto& [key, now] : run_config()) {
      if (key == "total_steps" || key == "tokenizer_file") continue;
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
    CheckpointState s;
    for (const auto& p : model_->named_parameters()) s.model[p.key()] = p.value();
    for (const auto& b : model_->named_buffers()) s.model[b.key()] = b.value();
    s.ema = ema_;
    for (const auto& slot : optimizer_->slots()) {
      s.exp_avg[slot.name] = slot.exp_avg;
      s.exp_avg_sq[slot.name] = slot.exp_avg_sq;
      s.adam_steps[slot.name] = slot.step;
    }
    s.step = step_;
    s.rng = gen_.get_state();
    s.config = run_config();
    if (!opt_.objective.tokenizer.empty()) s.config["tokenizer_file"] = opt_.objective.tokenizer;
    s.tokenizer = objective_->tokenizer();
    s.latent = objective_->latent();
    std::vector<std::string> inputs = opt_.run.inputs;
    if (!opt_.run.init.empty()) inputs.push_back(opt_.run.init);
    save_checkpoint(opt_.run.output, s, prov_, inputs);
    saved_step_ = step_;
  }

  TrainBenchmark benchmark() {
    const int64_t warm = 3, n = opt_.run.benchmark;
    for (int64_t i = 0; i < warm; ++i, ++step_) train_step();
    if (device_.is_cuda()) compat::synchronize(device_);
    auto t0 = std::chrono::steady_clock::now();
    int64_t kept_tokens = 0;
    double flops = 0;
    for (int64_t i = 0; i < n; ++i, ++step_) {
      train_step();
      kept_tokens += last_kept_;
      flops += last_flops_;
    }
    if (device_.is_cuda()) compat::synchronize(device_);
    TrainBenchmark r;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.commit = git_commit(), r.libtorch = libtorch_version(), r.device = prov_.device;
    r.precision = prov_.precision;
    r.objective = objective_->name(), r.model = model_cfg_.preset;
    r.parameters = parameter_count(), r.batch = opt_.optim.batch, r.steps = n, r.threads = at::get_num_threads();
    r.images_per_s = static_cast<double>(n * opt_.optim.batch) / r.seconds;
    r.encoder_tokens_per_s = static_cast<double>(kept_tokens) / r.seconds;
    r.tflops = flops / r.seconds / 1e12;
    const double peak = opt_.run.peak_tflops > 0 ? opt_.run.peak_tflops : compat::peak_tflops(device_);
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
    const std::string path = beside(opt_.run.output, ".metrics.jsonl");
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

  // Encoder tokens and model FLOPs (forward + backward = 3 forward) of a batch, for --benchmark.
  void count_work(const Batch& b) {
    at::Tensor kept = (~b.corrupted.dropped).sum(1).cpu();
    auto k = kept.accessor<int64_t, 1>();
    last_kept_ = 0;
    last_flops_ = 0;
    for (int64_t i = 0; i < kept.size(0); ++i) {
      last_kept_ += k[i];
      last_flops_ += 3 * model_->forward_flops(1, k[i]);
    }
  }

  int64_t parameter_count() const {
    int64_t n = 0;
    for (const auto& p : named_) n += p.value().numel();
    return n;
  }

  const TrainOptions& opt_;
  Provenance& prov_;
  ImageTable table_;
  std::unique_ptr<Objective> objective_;
  ModelConfig model_cfg_;
  at::Device device_{at::kCPU};
  MaskedDiffusionAutoencoder model_{nullptr};
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
  int64_t num_classes_ = 0, spe_ = 1, total_ = 0, warmup_ = 0, step_ = 0;
  int64_t saved_step_ = -1;
  double ema_decay_ = 0;
  Augment augment_;          // --augment, or the objective's     // --ema, or the objective's default; 0: no EMA kept  // the step of the checkpoint under -o; -1 while there is none
  int64_t last_kept_ = 0;
  double last_flops_ = 0, grad_norm_ = 0;
};

}  // namespace

std::string TrainBenchmark::to_json() const {
  return fmt::format(R"({{"tool": "mdx-train", "commit": "{}", "libtorch": "{}", "device": "{}", "precision": "{}", )"
                     R"("objective": "{}", )"
                     R"("model": "{}", "parameters": {}, "batch": {}, "steps": {}, "seconds": {:.4f}, )"
                     R"("step_ms": {:.3f}, "images_per_s": {:.2f}, "encoder_tokens_per_s": {:.1f}, )"
                     R"("tflops": {:.4f}, "mfu": {}, "peak_memory_mib": {:.1f}, "threads": {}}})",
                     commit, libtorch, device, precision, objective, model, parameters, batch, steps, seconds,
                     1000 * seconds / static_cast<double>(std::max<int64_t>(steps, 1)), images_per_s,
                     encoder_tokens_per_s, tflops, mfu ? fmt::format("{:.4f}", *mfu) : std::string("null"),
                     peak_memory_mib, threads);
}

std::optional<TrainBenchmark> train(const TrainOptions& opt, Provenance& prov) {
  std::unique_ptr<Trainer> trainer;
  try {
    trainer = std::make_unique<Trainer>(opt, prov);
  } catch (const Interrupted&) {
    // A signal while the table loads: nothing trained, nothing written, and the exit status
    // the requeue recipe tests for (mdx(7): a first signal never ends mdx-train with 130/143).
    throw Suspended(opt.run.resume
                        ? fmt::format("interrupted by a signal while loading; '{}' is unchanged; continue with --resume",
                                      opt.run.output)
                        : std::string("interrupted by a signal while loading, before the first step; nothing written"));
  }
  return trainer->run();
}

}  // namespace mdx
