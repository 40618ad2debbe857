// libFuzzer target: the JSON documents the tools read.
//   byte 0 % 5 picks the reader, the rest is the document:
//   0  a dataset manifest: LoadManifest (data/manifest.cc, util/json_view.cc)
//   1  a --config file: parsed as CommandLine::Parse does, ConfigToTokens (util/options.cc), then the
//      tokens through Boost.ProgramOptions with options of every registered type
//   2  a checkpoint's "model" attribute: ModelConfig::FromJson (models/model.cc)
//   3  a checkpoint's "datasets" attribute entry: HeadInfo::FromJson (models/checkpoint.cc)
//   4  a joint teacher's specification: JointSpec::FromJson (models/joint.cc)
// (The HDF5 files carrying 2-4 are fuzzed whole by fuzz_h5; their checksums make byte mutations
// of the JSON inside them rare, so the JSON readers are fuzzed directly here as well.)
#include <boost/program_options.hpp>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "data/manifest.h"
#include "fuzz_util.h"
#include "models/checkpoint.h"
#include "models/joint.h"
#include "models/model.h"
#include "util/options.h"
#include "util/error.h"
#include "util/json_view.h"
#include "util/log.h"

namespace po = boost::program_options;

namespace {

// The option types the stage binaries register (see OptionValueJson in util/app.cc).
void ParseTokens(const std::vector<std::string>& tokens) {
  std::string s;
  int i = 0;
  int64_t l = 0;
  unsigned u = 0;
  double d = 0;
  float f = 0;
  bool b = false;
  std::vector<std::string> vs;
  std::vector<int> vi;
  po::options_description o;
  o.add_options()("out", po::value(&s))("epochs", po::value(&i)->default_value(1))(
      "seed", po::value(&l))("workers", po::value(&u))("lr", po::value(&d))("wd", po::value(&f))(
      "flip", po::value(&b)->implicit_value(true))("teacher", po::value(&vs))("levels", po::value(&vi))(
      "loss.alpha", po::value<double>())("verbose,v", po::value<int>())("threads", po::value<int>());
  po::variables_map vm;
  constexpr int kStyle = po::command_line_style::default_style & ~po::command_line_style::allow_guessing;
  try {
    po::store(po::command_line_parser(tokens).options(o).style(kStyle).run(), vm);
    po::notify(vm);
    nlohmann::json resolved = nlohmann::json::object();
    for (const auto& [key, value] : vm) resolved[key] = mlfd::OptionValueJson(key, value.value());
  } catch (const po::error&) {  // CommandLine::Parse turns these into UsageError
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  mlfd::SetVerbosity(0);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int mode = data[0] % 5;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    if (mode == 0) {
      mlfd::LoadManifest(mlfd_fuzz::WriteFile("manifest.json", text));
      return 0;
    }
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception&) {
      // A parse error, or a number out of range (1e999): CommandLine::Parse and
      // h5::File::GetJsonAttr turn every JSON exception into UsageError / Error.
      return 0;
    }
    switch (mode) {
      case 1:
        ParseTokens(mlfd::ConfigToTokens(j, "fuzz_config.json"));
        break;
      case 2:
        mlfd::ModelConfig::FromJson(j, "fuzz: model");
        break;
      case 3:
        mlfd::HeadInfo::FromJson(j, "fuzz: datasets[0]");
        break;
      case 4:
        mlfd::JointSpec::FromJson(j, "fuzz: joint");
        break;
    }
  } catch (const mlfd::Error&) {
  }
  return 0;
}
