// Plots drawn with OpenCV (no plotting library is among the dependencies): a confusion-matrix
// heat map and line charts, as PNG bytes or written atomically. Every PNG carries the toolkit's
// mark (a tEXt chunk Software = "mlfd", util/file_roles.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mlfd {

// Rows = true class, columns = predicted; colour = row-normalised share; counts printed in the
// cells when there are at most 20 classes. `counts` is K x K row-major.
std::string ConfusionMatrixPng(const std::vector<int64_t>& counts, const std::vector<std::string>& class_names,
                               const std::string& title);
void PlotConfusionMatrix(const std::vector<int64_t>& counts, const std::vector<std::string>& class_names,
                         const std::string& title, const std::string& png_path);

struct Series {
  std::string name;
  std::vector<double> x, y;
};
// Line chart with axes, numeric ticks, a legend, a title and axis labels; NaNs are skipped.
std::string LinesPng(const std::vector<Series>& series, const std::string& title, const std::string& xlabel,
                     const std::string& ylabel);
void PlotLines(const std::vector<Series>& series, const std::string& title, const std::string& xlabel,
               const std::string& ylabel, const std::string& png_path);

}  // namespace mlfd
