/**
 * Guest images: kernel, agent binary and rootfs catalog, built locally from Debian packages and cached
 * under {@link cacheDir}. Every artifact is keyed by a hash of what produced it, written to a temp path
 * and renamed into place, so a crash never leaves something that looks complete.
 */
export { buildImagesCli } from "./cli.js";
export { type CmdlineOptions, kernelCmdline } from "./cmdline.js";
export { type ImagePaths, builtImage, catalog, defaultImage, ensureImage } from "./image.js";
export { cacheDir } from "./util.js";
export { ensureAgent } from "./agent.js";
export { ensureKernel } from "./kernel.js";
export { hostKhz } from "./hostinfo.js";
