// Window/level on the GPU: one frame is uploaded once (modality values as R32Float, or RGBA8),
// and every drag only rewrites this 48-byte uniform.

struct Params {
    // Image rect in pane-normalized coordinates (x0, y0, x1, y1): (0,0) pane top-left, (1,1) bottom-right.
    img_rect: vec4<f32>,
    // (window center, window width, invert 0|1, mode: 0 grey, 1 colour, 2 grey through the VOI LUT)
    window: vec4<f32>,
    // (LUT first mapped value, LUT entries, LUT max output, smooth 0|1)
    lut: vec4<f32>,
};

@group(0) @binding(0) var img: texture_2d<f32>;
@group(0) @binding(1) var<uniform> params: Params;
// VOI LUT entries in rows of 256 texels.
@group(0) @binding(2) var lut: texture_2d<f32>;

struct VsOut {
    @builtin(position) pos: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

@vertex
fn vs_main(@builtin(vertex_index) vi: u32) -> VsOut {
    let uv = vec2<f32>(f32(vi & 1u), f32(vi >> 1u));
    let p = mix(params.img_rect.xy, params.img_rect.zw, uv);
    var out: VsOut;
    // The viewport is the pane, so pane-normalized coordinates map straight to NDC.
    out.pos = vec4<f32>(p.x * 2.0 - 1.0, 1.0 - p.y * 2.0, 0.0, 1.0);
    out.uv = uv;
    return out;
}

fn texel(p: vec2<i32>, dims: vec2<i32>) -> vec4<f32> {
    return textureLoad(img, clamp(p, vec2<i32>(0, 0), dims - vec2<i32>(1, 1)), 0);
}

// Bilinear by hand: R32Float textures cannot be filtered by a sampler.
fn fetch(uv: vec2<f32>) -> vec4<f32> {
    let dims = vec2<i32>(textureDimensions(img));
    let pos = uv * vec2<f32>(dims);
    if (params.lut.w < 0.5) {
        return texel(vec2<i32>(floor(pos)), dims);
    }
    let q = pos - 0.5;
    let base = vec2<i32>(floor(q));
    let f = q - floor(q);
    let a = texel(base, dims);
    let b = texel(base + vec2<i32>(1, 0), dims);
    let c = texel(base + vec2<i32>(0, 1), dims);
    let d = texel(base + vec2<i32>(1, 1), dims);
    return mix(mix(a, b, f.x), mix(c, d, f.x), f.y);
}

fn voi_lut(v: f32) -> f32 {
    let n = i32(params.lut.y);
    let i = clamp(i32(round(v - params.lut.x)), 0, max(n - 1, 0));
    let e = textureLoad(lut, vec2<i32>(i % 256, i / 256), 0).r;
    return e / max(params.lut.z, 1.0);
}

fn windowed(v: f32) -> f32 {
    let width = max(params.window.y, 1e-6);
    return clamp((v - params.window.x) / width + 0.5, 0.0, 1.0);
}

@fragment
fn fs_main(in: VsOut) -> @location(0) vec4<f32> {
    let s = fetch(in.uv);
    let mode = i32(params.window.w + 0.5);
    var rgb: vec3<f32>;
    if (mode == 1) {
        rgb = vec3<f32>(windowed(s.r * 255.0), windowed(s.g * 255.0), windowed(s.b * 255.0));
    } else if (mode == 2) {
        rgb = vec3<f32>(voi_lut(s.r));
    } else {
        rgb = vec3<f32>(windowed(s.r));
    }
    if (params.window.z > 0.5) {
        rgb = vec3<f32>(1.0) - rgb;
    }
    return vec4<f32>(rgb, 1.0);
}
