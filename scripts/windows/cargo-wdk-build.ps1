<#
.SYNOPSIS
    Builds and packages vmbmsg with cargo-wdk 0.2 (`cargo wdk build`), then adds vmbctl.exe to
    the package folder. Windows only; run from any directory.

.DESCRIPTION
    cargo-wdk 0.2.0 takes the INX from `<package directory>\<package name, '-' -> '_'>.inx`
    and stops with "Missing .inx file in source path" when it is not there
    (crates/cargo-wdk/src/actions/build/package_task.rs: `src_inx_file_path`,
    `check_inx_exists`). For vmbmsg that is `vmbmsg.inx` at the repository root, but the INX
    lives in `inf\vmbmsg.inx`. This script copies it to the root for the duration of the build
    and deletes the copy afterwards (never commit it).

    Every argument is passed to `cargo wdk build` unchanged, with one default added: when no
    `--target-platform` is given, `--target-platform windows` is passed, so that infverif checks
    the INF with `/w` as the cargo-make flow does (cargo-wdk's own default is `universal`,
    i.e. `/u`; package_task.rs `TargetPlatform::as_infverif_flag`).

    cargo-wdk, run at the workspace root, builds every workspace member with
    `cargo build -p <member>` and packages only the package with `[package.metadata.wdk]` and a
    cdylib (crates/cargo-wdk/src/actions/build/mod.rs `run_from_workspace_root`,
    `build_and_package`). The package folder is `<dir of vmbmsg.dll>\vmbmsg_package`, which
    cargo-wdk deletes and recreates on every run. vmbctl is then built once more with the same
    profile, target and `--locked` (a no-op when cargo-wdk already built it) and vmbctl.exe is
    copied next to the driver, as `cargo make` does.

.EXAMPLE
    pwsh scripts\windows\cargo-wdk-build.ps1
    Debug build for the host architecture: target\debug\vmbmsg_package\

.EXAMPLE
    pwsh scripts\windows\cargo-wdk-build.ps1 --profile release --target-arch amd64 --locked
    Release build: target\x86_64-pc-windows-msvc\release\vmbmsg_package\

.EXAMPLE
    pwsh scripts\windows\cargo-wdk-build.ps1 --sign-mode off
    Package without signing (no test certificate, no timestamp server needed).
#>

# No param() block: the arguments are cargo-wdk's (`--profile`, ...), which PowerShell would
# otherwise try to bind as its own parameters.
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$root = (Resolve-Path (Join-Path $PSScriptRoot '..\..')).Path
$inx = Join-Path $root 'inf\vmbmsg.inx'
$rootInx = Join-Path $root 'vmbmsg.inx'
$forward = @($args)

function Get-ArgValue([string[]] $argv, [string] $name) {
    for ($i = 0; $i -lt $argv.Count; $i++) {
        if ($argv[$i] -eq $name -and $i + 1 -lt $argv.Count) { return $argv[$i + 1] }
        if ($argv[$i] -like "$name=*") { return $argv[$i].Substring($name.Length + 1) }
    }
    return $null
}

if (-not (Test-Path -LiteralPath $inx -PathType Leaf)) {
    throw "vmbmsg: $inx does not exist; it is the driver's INX template"
}
if ($forward -contains '--sample') {
    throw "vmbmsg: --sample is for the Windows-rust-driver-samples INFs; vmbmsg is not a sample"
}
if ($null -eq (Get-ArgValue $forward '--target-platform')) {
    $forward += @('--target-platform', 'windows')
}

# A leftover copy from an interrupted run is fine if it is identical; anything else is someone's
# edit in the wrong place.
$created = $false
if (Test-Path -LiteralPath $rootInx) {
    if ((Get-FileHash -LiteralPath $rootInx).Hash -ne (Get-FileHash -LiteralPath $inx).Hash) {
        throw "vmbmsg: $rootInx differs from $inx. The INX is edited in inf\; delete the root copy."
    }
} else {
    Copy-Item -LiteralPath $inx -Destination $rootInx
    $created = $true
}

Push-Location $root
try {
    Write-Host "vmbmsg: cargo wdk build $($forward -join ' ')"
    & cargo wdk build @forward
    if ($LASTEXITCODE -ne 0) { throw "vmbmsg: cargo wdk build failed (exit code $LASTEXITCODE)" }

    # Where cargo put vmbmsg.dll, hence the package: target\[<triple>\]<debug | release>.
    # (`$profile` would shadow PowerShell's automatic $PROFILE variable.)
    $cargoProfile = Get-ArgValue $forward '--profile'
    if ($null -eq $cargoProfile) { $cargoProfile = 'dev' }
    $cargoProfile = $cargoProfile.ToLowerInvariant()
    $profileDir = if ($cargoProfile -eq 'dev') { 'debug' } else { $cargoProfile }
    # cargo-wdk passes `--target <triple>` only for --target-arch; without it cargo uses
    # CARGO_BUILD_TARGET / build.target if set, else the host.
    $arch = Get-ArgValue $forward '--target-arch'
    if ($arch -ieq 'amd64') { $triple = 'x86_64-pc-windows-msvc' }
    elseif ($arch -ieq 'arm64') { $triple = 'aarch64-pc-windows-msvc' }
    else { $triple = $env:CARGO_BUILD_TARGET }
    $outDir = Join-Path $root 'target'
    if ($triple) { $outDir = Join-Path $outDir $triple }
    $outDir = Join-Path $outDir $profileDir
    $package = Join-Path $outDir 'vmbmsg_package'
    if (-not (Test-Path -LiteralPath (Join-Path $package 'vmbmsg.sys'))) {
        throw "vmbmsg: no vmbmsg.sys in $package; is CARGO_TARGET_DIR or build.target-dir set? (docs\build-windows.md)"
    }

    $cargoArgs = @('build', '--package', 'vmbctl', '--profile', $cargoProfile)
    if ($triple) { $cargoArgs += @('--target', $triple) }
    if ($forward -contains '--locked') { $cargoArgs += '--locked' }
    Write-Host "vmbmsg: cargo $($cargoArgs -join ' ')"
    & cargo @cargoArgs
    if ($LASTEXITCODE -ne 0) { throw "vmbmsg: building vmbctl failed (exit code $LASTEXITCODE)" }
    Copy-Item -LiteralPath (Join-Path $outDir 'vmbctl.exe') -Destination $package -Force

    Write-Host "vmbmsg: package $package"
    Get-ChildItem -LiteralPath $package | Format-Table Name, Length, LastWriteTime -AutoSize
} finally {
    Pop-Location
    if ($created) { Remove-Item -LiteralPath $rootInx -ErrorAction SilentlyContinue }
}
