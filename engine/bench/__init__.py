"""`engine bench`: the three served endpoints end to end beside diffusers' pipelines, on the same weights.

Real weights cannot be downloaded here, so the benchmark writes random ones in the real layouts
(`weights`): at full size on a GPU machine (the arithmetic, memory traffic and kernels are those of the
real files; the images are noise), tiny on a machine without CUDA so that CI keeps the whole path
working. `engine_runs` drives the engine through its service (queue, worker, executor, the endpoint's
own graph); `diffusers_runs` builds diffusers' AuraFlowPipeline and FluxPipeline from the same files
with diffusers' own converters; `work` is PERF.md's model of the arithmetic each image costs; `run`
puts them together and `report` writes the JSON and the markdown table.
"""
