"""Files a user opens without p2m: a rigged glTF binary (.glb) and a textured OBJ, with a texture from the photo.

```python
from p2m.export import export_mesh                       # one call: what `p2m infer --format glb --texture` needs
res = export_mesh(out_dir, body, pred.vertices, pred.joints_h36m, formats=("glb", "obj"), unit=1e-3,
                  image=photo, weak_perspective=(cam.scale, cam.tx, cam.ty))
# or the parts:
from p2m.export import body_uv_layout, camera_to_gltf, skin_from_body, texture_from_photo, write_rigged_glb
skin = skin_from_body(body, mesh_cam_m, joints_cam_m)               # H36M-17 skeleton + anny's weights
tex = texture_from_photo(photo, mesh_cam_m, faces, body_uv_layout(body), f=f, c=c)
write_rigged_glb("out.glb", camera_to_gltf(mesh_cam_m), faces, camera_to_gltf(skin.joints), skin.parents,
                 skin.weights, skin.names, texture=(tex.texture, tex.layout))
```
"""

from __future__ import annotations

from p2m.export.api import EXPORT_FORMATS, ExportResult, body_rest_vertices, export_mesh
from p2m.export.gltf import CAMERA_TO_GLTF, MAX_INFLUENCES, camera_to_gltf, limit_influences, write_rigged_glb
from p2m.export.skin import SKELETONS, Skin, body_skinning_weights, bone_to_h36m, h36m_parents, skin_from_body
from p2m.export.texture import TextureResult, sample_bilinear, texture_from_photo, write_textured_obj
from p2m.export.uv import (
    UVLayout,
    body_uv_layout,
    per_vertex_layout,
    rasterize_uv,
    split_seams,
    triangle_atlas,
)

__all__ = [
    "EXPORT_FORMATS",
    "ExportResult",
    "body_rest_vertices",
    "export_mesh",
    "CAMERA_TO_GLTF",
    "MAX_INFLUENCES",
    "SKELETONS",
    "Skin",
    "TextureResult",
    "UVLayout",
    "body_skinning_weights",
    "body_uv_layout",
    "bone_to_h36m",
    "camera_to_gltf",
    "h36m_parents",
    "limit_influences",
    "per_vertex_layout",
    "rasterize_uv",
    "sample_bilinear",
    "skin_from_body",
    "split_seams",
    "texture_from_photo",
    "triangle_atlas",
    "write_rigged_glb",
    "write_textured_obj",
]
