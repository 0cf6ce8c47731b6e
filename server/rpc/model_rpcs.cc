// The model RPCs: ListModels and GetModel, answered from the models snapshot.
#include "core/base/status_macros.h"
#include "server/rpc/unary_rpcs.h"

namespace attnserve {

absl::Status HandleListModels(const ModelRegistry& models, v1::ListModelsResponse* response) {
  for (const LoadedModel* model : models.List()) *response->add_models() = model->config;
  return absl::OkStatus();
}

absl::Status HandleGetModel(const ModelRegistry& models, const v1::GetModelRequest& request,
                            v1::GetModelResponse* response) {
  ASSIGN_OR_RETURN(const LoadedModel* model, models.Find(request.name()));
  *response->mutable_config() = model->config;
  return absl::OkStatus();
}

}  // namespace attnserve
