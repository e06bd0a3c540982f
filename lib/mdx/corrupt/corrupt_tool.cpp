#include "mdx/corrupt/corrupt_tool.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>

#include "mdx/corrupt/objective.h"
#include "mdx/io/grid.h"
#include "mdx/io/decode.h"
#include "mdx/io/hdf5.h"
#include "mdx/io/image_table.h"
#include "mdx/io/png.h"
#include "mdx/tokenize/patches.h"
#include "mdx/tokenize/tokenizer.h"
#include "mdx/util/error.h"
#include "mdx/util/log.h"
#include "mdx/util/output.h"
#include "mdx/util/torch_compat.h"

namespace mdx {

void CorruptOptions::add_to(CLI::App& app) {
  app.add_option("inputs", inputs, "image table(s) (HDF5) or image files")->required();
  app.add_option("-o,--output", output, "grid.png, or corrupted.h5 (images, masks, timesteps)")->required();
  objective.add_to(app, false);
  app.add_option("--t", t, "timesteps to show, comma-separated (default 0,T/4,T/2,3T/4,T-1)")
      ->delimiter(',')
      ->allow_extra_args(false);
  app.add_option("--mask-ratio", mask_ratio, "mask ratios to show under the fixed policy (default 0.75)")
      ->delimiter(',')
      ->allow_extra_args(false);
  app.add_option("--draws", draws, "ratios drawn under the mage policy")->capture_default_str();
  app.add_option("--progress", progress,
                 "training progress (0..1) at which LMD's ratio is shown (default 0,0.2,0.4,0.6,0.8,1)")
      ->delimiter(',')
      ->allow_extra_args(false);
  app.add_option("--patch", patch, "patch size p (a masked token is a p x p patch)")->capture_default_str();
  app.add_option("--count", count, "images (rows)")->capture_default_str();
  app.add_option("--first", first, "index of the first image in the table")->capture_default_str();
  app.add_option("--zoom", zoom, "pixel repetition in the PNG (0: cells of at least 64 px)")->capture_default_str();
  app.add_flag("--no-original", no_original, "leave out the clean image column");
  app.add_flag("--no-labels", no_labels,
               "PNG: draw no labels (the column's timestep or mask ratio above it, the row's index and class "
               "name beside it)");
  augment.add_to(app);
}

void CorruptOptions::validate() const {
  const int64_t steps = objective.settings().steps;
  for (auto v : t)
    if (v < 0 || v >= steps) throw UsageError(fmt::format("--t {} is outside [0, {}]", v, steps - 1));
  for (auto r : mask_ratio)
    if (!(r >= 0 && r <= 1)) throw UsageError(fmt::format("--mask-ratio {} is outside [0, 1]", r));
  for (auto p : progress)
    if (!(p >= 0 && p <= 1)) throw UsageError(fmt::format("--progress {} is outside [0, 1]", p));
  if (draws < 1) throw UsageError("--draws must be at least 1");
  if (patch < 1) throw UsageError("--patch must be at least 1");
  if (count < 1) throw UsageError("--count must be at least 1");
  if (first < 0) throw UsageError("--first must be >= 0");
  if (zoom < 0 || zoom > 64) throw UsageError("--zoom must lie in [0, 64]");
  auto ext = lowercase_extension(output);
  if (ext != ".png" && ext != ".h5" && ext != ".hdf5")
    throw UsageError("-o must end in .png (a grid) or .h5/.hdf5 (data), got '" + output + "'");
}

namespace {

struct Column {
  int64_t t;     // -1: no noise
  double ratio;  // 0: no mask
  std::string label;
};

// The columns an objective shows: the ratio columns of masked objectives, the t columns of
// noising ones (UMD has both: its representation step, then its noisy steps).
std::vector<Column> columns_for(const CorruptOptions& opt, const Objective& objective, at::Generator& gen) {
  const ObjectiveSettings& cfg = objective.settings();
  std::vector<Column> cols;
  if (!opt.no_original) cols.push_back({-1, 0.0, "x0"});
  if (objective.masks()) {
    switch (cfg.mask_policy) {
      case MaskPolicy::Fixed:
        for (double r : opt.mask_ratio.empty() ? std::vector<double>{cfg.mask_ratio} : opt.mask_ratio)
          cols.push_back({-1, r, fmt::format("mask {:.3f}", r)});
        break;
      case MaskPolicy::Mage:
        for (int64_t i = 0; i < opt.draws; ++i) {
          double r = mage_ratio(gen);
          cols.push_back({-1, r, fmt::format("mage mask {:.3f}", r)});
        }
        break;
      default: {
        const int64_t total = 1000000;
        for (double p : opt.progress.empty() ? std::vector<double>{0, 0.2, 0.4, 0.6, 0.8, 1.0} : opt.progress) {
          double r = mask_ratio(cfg.mask_policy, cfg.mask_ratio, static_cast<int64_t>(std::llround(p * total)), total,
                                gen);
          cols.push_back({-1, r, fmt::format("{} at {:.2f}: mask {:.3f}", mask_policy_name(cfg.mask_policy), p, r)});
        }
      }
    }
  }
  if (objective.noises()) {
    const double r = objective.noisy_mask_ratio();
    const int64_t T = cfg.steps;
    for (int64_t t : opt.t.empty() ? std::vector<int64_t>{0, T / 4, T / 2, 3 * T / 4, T - 1} : opt.t) {
      cols.push_back({t, r, r > 0 ? fmt::format("t={} mask {:.3f}", t, r) : fmt::format("t={}", t)});
    }
  }
  return cols;
}

// The rows to show, as uint8 [R,H,W,C], their labels (or -1) and the table's class names.
at::Tensor load_rows(const CorruptOptions& opt, Provenance& prov, std::vector<int64_t>& index,
                     std::vector<int64_t>& labels, std::vector<std::string>& names) {
  bool files = is_image_file(opt.inputs[0]);
  for (const auto& in : opt.inputs)
    if (is_image_file(in) != files) throw UsageError("give either image files or HDF5 tables, not both");
  for (const auto& in : opt.inputs) prov.add_input(in);
  if (files) {
    std::vector<at::Tensor> rows;
    const auto files_given = static_cast<int64_t>(opt.inputs.size());
    if (opt.first >= files_given)
      throw Error(fmt::format("--first {} is past the last of the {} image files", opt.first, files_given));
    int64_t n = std::min<int64_t>(opt.count, files_given - opt.first);
    Image first;
    for (int64_t i = opt.first; i < opt.first + n; ++i) {
      Image img = decode_image(opt.inputs[i], i == opt.first ? 0 : static_cast<int>(first.channels));
      if (i == opt.first) first = img;
      if (img.height != first.height || img.width != first.width)
        throw Error(fmt::format("'{}' is {}x{}, '{}' is {}x{}: tokenize images to one size first", opt.inputs[i],
                                img.height, img.width, opt.inputs[opt.first], first.height, first.width));
      rows.push_back(at::from_blob(img.pixels.data(), {img.height, img.width, img.channels}, at::kByte).clone());
      index.push_back(i);
      labels.push_back(-1);
    }
    return at::stack(rows);
  }
  ImageTable table(opt.inputs);
  prov.merge_history(table.history());
  if (opt.first >= table.size())
    throw Error(table.size() == 0 ? fmt::format("'{}' holds no images", fmt::join(opt.inputs, "', '"))
                                  : fmt::format("--first {} is past the end of the table ({} images)", opt.first,
                                                table.size()));
  int64_t n = std::min(opt.count, table.size() - opt.first);
  at::Tensor images = at::empty({n, table.height(), table.width(), table.channels()}, at::kByte);
  labels.assign(n, -1);
  table.read(opt.first, n, images.data_ptr<uint8_t>(), table.has_labels() ? labels.data() : nullptr);
  for (int64_t i = 0; i < n; ++i) index.push_back(opt.first + i);
  names = table.label_names();
  return images;
}

}  // namespace

void corrupt(const CorruptOptions& opt, Provenance& prov) {
  opt.validate();
  std::vector<std::string> inputs = opt.inputs;
  const std::string& tokenizer = opt.objective.tokenizer;
  FilePlan().read(opt.inputs).read(tokenizer, "--tokenizer").write(opt.output).check();
  if (!tokenizer.empty()) inputs.push_back(tokenizer);
  AtomicOutput out(opt.output, inputs);
  std::shared_ptr<const Tokenizer> given = tokenizer.empty() ? nullptr : load_tokenizer_file(tokenizer);
  std::unique_ptr<Objective> objective = opt.objective.make(given && given->has_posterior());
  objective->bind(given, opt.patch);
  const Tokenizer& tok = *objective->tokenizer();
  at::Generator gen = compat::cpu_generator(prov.seed);

  std::vector<int64_t> index, labels;
  std::vector<std::string> names;
  at::Tensor images = load_rows(opt, prov, index, labels, names);
  if (!tokenizer.empty()) prov.add_input(tokenizer);
  const int64_t R = images.size(0), H = images.size(1), W = images.size(2), C = images.size(3);
  // The rows as mdx-train's augmentation would give them (row i drawn as row i of step 0).
  const Augment augment = opt.augment.resolve(objective->default_augment(false));
  std::vector<int64_t> boxes;  // [R, 5]: top, left, height, width, flipped
  if (augment.any()) {
    images = images.contiguous();
    at::Tensor src = images.clone();
    for (int64_t i = 0; i < R; ++i) {
      const CropBox b = augment.draw(H, W, prov.seed, 0, i);
      resized_crop(src.data_ptr<uint8_t>() + i * H * W * C, H, W, C, b, images.data_ptr<uint8_t>() + i * H * W * C,
                   H, W);
      boxes.insert(boxes.end(), {b.top, b.left, b.height, b.width, b.flip ? 1 : 0});
    }
  }
  const TokenGeometry geometry = tok.geometry(H, W, C);
  objective->check_space(geometry, tokenizer.empty() ? tok.kind() : "'" + tokenizer + "'");
  if (auto latent = objective->latent()) latent->geometry(H, W, C);
  const int64_t L = geometry.tokens(), patch = geometry.cell_h();
  at::Tensor x0 = tok.encode(images);

  std::vector<Column> cols = columns_for(opt, *objective, gen);
  const auto K = static_cast<int64_t>(cols.size());
  if (K == 0) throw UsageError("nothing to show: no columns");
  std::vector<at::Tensor> corrupted, masked, dropped;
  for (const auto& c : cols) {
    Corrupted k = objective->apply(x0, c.t, c.ratio, gen);
    corrupted.push_back(tok.decode(k.xt, geometry));
    masked.push_back(k.masked);
    dropped.push_back(k.dropped);
  }
  at::Tensor xt = at::stack(corrupted, 1).contiguous();   // [R,K,H,W,C] float
  at::Tensor mk = at::stack(masked, 1).contiguous();      // [R,K,L] bool
  at::Tensor dr = at::stack(dropped, 1).contiguous();     // [R,K,L] bool
  at::Tensor u8 = to_uint8(xt).contiguous();

  std::string col_text;
  for (const auto& c : cols) col_text += (col_text.empty() ? "" : "; ") + c.label;
  // MAE adds no noise: its files say so rather than name an unused schedule.
  const std::string schedule = objective->noises() ? schedule_name(objective->settings().schedule) : "none";
  const std::string policy = mask_policy_name(objective->settings().mask_policy);
  log("{} rows x {} columns ({}), objective {}, schedule {}, {}", R, K, col_text, objective->name(), schedule,
      tok.describe());

  if (lowercase_extension(opt.output) == ".png") {
    GridLabels drawn;
    if (!opt.no_labels) {
      for (const auto& c : cols) drawn.columns.push_back(c.label);
      for (int64_t i = 0; i < R; ++i) {
        const int64_t y = labels[static_cast<size_t>(i)];
        const bool named = y >= 0 && y < static_cast<int64_t>(names.size());
        drawn.rows.push_back(fmt::format("#{}", index[static_cast<size_t>(i)]) +
                             (named ? " " + names[static_cast<size_t>(y)] : y >= 0 ? fmt::format(" class {}", y) : ""));
      }
    }
    Grid grid = render_grid(u8, mk, dr, patch, opt.zoom, drawn);
    auto text = prov.fields();
    text.insert(text.begin(), {"Software", std::string("mdx-corrupt ") + version()});
    text.push_back({"mdx_objective", objective->name()});
    text.push_back({"mdx_schedule", schedule});
    text.push_back({"mdx_mask_policy", policy});
    text.push_back({"mdx_patch", std::to_string(patch)});
    text.push_back({"mdx_augment", augment.describe()});
    text.push_back({"mdx_columns", col_text});
    text.push_back({"mdx_rows", fmt::format("{}", fmt::join(index, ","))});
    for (const auto& kv : grid_layout_text(grid)) text.push_back(kv);
    text.push_back({"mdx_legend", "blue: masked and dropped from the encoder; orange: masked, given to the encoder "
                                  "as the mask token (MAGE)"});
    write_png(out.temp_path(), grid.pixels.data(), grid.height, grid.width, 3, text);
  } else {
    h5::Handle f = h5::create_file(out.temp_path());
    const auto r = static_cast<hsize_t>(R), k = static_cast<hsize_t>(K);
    const auto h = static_cast<hsize_t>(H), w = static_cast<hsize_t>(W), c = static_cast<hsize_t>(C),
               l = static_cast<hsize_t>(L);
    // `images` + `labels` make the file an image table of its own (row r*K + k).
    h5::write(f, "images", H5T_NATIVE_UINT8, {r * k, h, w, c}, u8.data_ptr<uint8_t>(), true);
    if (std::any_of(labels.begin(), labels.end(), [](int64_t v) { return v >= 0; })) {
      std::vector<int64_t> rep;
      for (int64_t i = 0; i < R; ++i) rep.insert(rep.end(), static_cast<size_t>(K), labels[i]);
      h5::write(f, "labels", H5T_NATIVE_INT64, {r * k}, rep.data());
    }
    at::Tensor xf = xt.to(at::kFloat).contiguous();
    h5::write(f, "corrupted", H5T_NATIVE_FLOAT, {r, k, h, w, c}, xf.data_ptr<float>(), true);
    at::Tensor m8 = mk.to(at::kByte).contiguous(), d8 = dr.to(at::kByte).contiguous();
    h5::write(f, "masked", H5T_NATIVE_UINT8, {r, k, l}, m8.data_ptr<uint8_t>());
    h5::write(f, "dropped", H5T_NATIVE_UINT8, {r, k, l}, d8.data_ptr<uint8_t>());
    std::vector<int64_t> ts;
    std::vector<double> ratios;
    std::vector<std::string> names;
    for (const auto& col : cols) ts.push_back(col.t), ratios.push_back(col.ratio), names.push_back(col.label);
    h5::write(f, "t", H5T_NATIVE_INT64, {k}, ts.data());
    h5::write(f, "mask_ratio", H5T_NATIVE_DOUBLE, {k}, ratios.data());
    h5::write_strings(f, "columns", names);
    h5::write(f, "index", H5T_NATIVE_INT64, {r}, index.data());
    if (!boxes.empty()) h5::write(f, "augment_boxes", H5T_NATIVE_INT64, {r, 5}, boxes.data());
    h5::write_attr(f, "augment", augment.describe());
    h5::write_attr(f, "objective", objective->name());
    h5::write_attr(f, "schedule", schedule);
    h5::write_attr(f, "mask_policy", policy);
    h5::write_attr(f, "patch", patch);
    h5::write_provenance(f, prov);
    h5::close_output(f, opt.output);
  }
  out.commit();
  log("wrote {}", opt.output);
}

}  // namespace mdx
