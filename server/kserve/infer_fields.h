// A KServe v2 request's inputs, parameters and outputs as a model reads them: by name, each of
// a known kind, anything unknown refused with INVALID_ARGUMENT naming it and what is known.
#ifndef ATTNSERVE_SERVER_KSERVE_INFER_FIELDS_H_
#define ATTNSERVE_SERVER_KSERVE_INFER_FIELDS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/kserve/infer_tensors.h"

namespace attnserve {

// How messages name an input: inputs["context"].
std::string InputField(absl::string_view name);

// A parameter's value when sent, else `fallback`; INVALID_ARGUMENT naming it when it is of
// another kind. An integer is read where a double is wanted; a uint64 past int64 is refused.
absl::StatusOr<bool> BoolParameter(const InferParameters& parameters, absl::string_view key,
                                   bool fallback);
absl::StatusOr<int64_t> IntParameter(const InferParameters& parameters, absl::string_view key,
                                     int64_t fallback);
absl::StatusOr<double> DoubleParameter(const InferParameters& parameters, absl::string_view key,
                                       double fallback);
absl::StatusOr<std::string> StringParameter(const InferParameters& parameters,
                                            absl::string_view key, std::string fallback);
bool HasParameter(const InferParameters& parameters, absl::string_view key);

// INVALID_ARGUMENT for the first parameter not in `known` ("… is not a parameter of model m").
absl::Status CheckParameterNames(const InferParameters& parameters,
                                 absl::Span<const absl::string_view> known,
                                 absl::string_view model);

// The request's inputs by name: each one of `known` at most once, every one of `required` sent.
absl::StatusOr<std::map<std::string, const InferInput*>> InputsByName(
    const std::vector<InferInput>& inputs, absl::Span<const absl::string_view> known,
    absl::Span<const absl::string_view> required, absl::string_view model);

// The outputs to return, in order: those the client names (each one of `known`, at most once),
// else `defaults`.
absl::StatusOr<std::vector<std::string>> OutputsToReturn(const InferRequest& request,
                                                         absl::Span<const absl::string_view> known,
                                                         std::vector<std::string> defaults);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_KSERVE_INFER_FIELDS_H_
