import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { refuseLocalSyncPath, refuseRelativeRemote, refuseRemoteSyncPath } from "./paths.js";

const HOME = "/home/alice";

describe("local sync path refusals", () => {
  it("never syncs / or $HOME itself, even with --force", () => {
    assert.match(refuseLocalSyncPath("/", HOME, true) ?? "", /refusing to sync \//);
    assert.match(refuseLocalSyncPath(HOME, HOME, true) ?? "", /home directory itself/);
    assert.match(refuseLocalSyncPath(`${HOME}/`, HOME, false) ?? "", /home directory itself/);
  });

  it("refuses credential directories and paths outside $HOME and /tmp unless --force", () => {
    for (const d of [".ssh", ".gnupg", ".aws", ".config", ".docker", ".kube", ".gcloud", ".azure"]) {
      assert.match(refuseLocalSyncPath(`${HOME}/${d}/sub`, HOME, false) ?? "", /holds credentials/, d);
      assert.equal(refuseLocalSyncPath(`${HOME}/${d}/sub`, HOME, true), undefined, d);
    }
    assert.match(refuseLocalSyncPath("/etc", HOME, false) ?? "", /only directories under \$HOME or \/tmp/);
    assert.match(refuseLocalSyncPath("/home/bob/x", HOME, false) ?? "", /only directories under/);
    assert.equal(refuseLocalSyncPath("/etc", HOME, true), undefined);
  });

  it("allows projects under $HOME and /tmp", () => {
    assert.equal(refuseLocalSyncPath(`${HOME}/work/project`, HOME, false), undefined);
    assert.equal(refuseLocalSyncPath(`${HOME}/.sshkeys-notes`, HOME, false), undefined);
    assert.equal(refuseLocalSyncPath("/tmp/build", HOME, false), undefined);
  });
});

describe("remote path refusals", () => {
  it("wants absolute paths for push/pull", () => {
    assert.match(refuseRelativeRemote("workspace/main.py") ?? "", /must be absolute/);
    assert.equal(refuseRelativeRemote("/workspace/main.py"), undefined);
  });

  it("never syncs /, system directories or relative paths", () => {
    assert.match(refuseRemoteSyncPath("root/work") ?? "", /must be absolute/);
    assert.match(refuseRemoteSyncPath("/") ?? "", /root directory/);
    assert.match(refuseRemoteSyncPath("/./") ?? "", /root directory/);
    for (const d of ["etc", "usr", "bin", "sbin", "lib", "lib64", "boot", "proc", "sys", "dev", "run"]) {
      assert.match(refuseRemoteSyncPath(`/${d}/x`) ?? "", /system directory/, d);
    }
    assert.match(refuseRemoteSyncPath("/srv/../etc") ?? "", /system directory/);
    assert.equal(refuseRemoteSyncPath("/root/work"), undefined);
    assert.equal(refuseRemoteSyncPath("/srv/site"), undefined);
  });
});
