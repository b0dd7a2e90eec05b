<#
.SYNOPSIS
    Checks a Windows build host for what docs/build-windows.md lists, the way the build looks
    for it. Changes nothing. Exit code 1 when something required is missing.

.DESCRIPTION
    The WDK is located as wdk-build 0.6.0 does (src/utils.rs `detect_wdk_content_root`,
    `detect_windows_sdk_version`; src/cargo_make.rs `setup_path`): `WDKContentRoot`, else
    `MicrosoftKitRoot\Windows Kits\<WDKKitVersion or 10.0>`, else the registry value
    `HKLM\SOFTWARE\Microsoft\Windows Kits\Installed Roots\KitsRoot10`; the version is
    `Version_Number`, else the highest `Lib\10.*` directory.

.EXAMPLE
    pwsh scripts\windows\check-prereqs.ps1
#>
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$script:failures = 0
function Pass([string] $m) { Write-Host "  ok    $m" }
function Note([string] $m) { Write-Host "  warn  $m" -ForegroundColor Yellow }
function Fail([string] $m) { Write-Host "  FAIL  $m" -ForegroundColor Red; $script:failures++ }

function Get-ToolVersion([string] $exe, [string[]] $argv) {
    try { return (& $exe @argv 2>$null | Select-Object -First 1) } catch { return $null }
}

Write-Host 'WDK'
$root = $null
if ($env:WDKContentRoot) {
    $root = $env:WDKContentRoot
} elseif ($env:MicrosoftKitRoot) {
    $kit = if ($env:WDKKitVersion) { $env:WDKKitVersion } else { '10.0' }
    $root = Join-Path (Join-Path $env:MicrosoftKitRoot 'Windows Kits') $kit
} else {
    foreach ($key in 'HKLM:\SOFTWARE\Microsoft\Windows Kits\Installed Roots',
                     'HKLM:\SOFTWARE\Wow6432Node\Microsoft\Windows Kits\Installed Roots') {
        try { $root = Get-ItemPropertyValue -Path $key -Name KitsRoot10; break } catch { }
    }
}
if (-not $root -or -not (Test-Path -LiteralPath $root -PathType Container)) {
    Fail 'no WDK found (WDKContentRoot, MicrosoftKitRoot or the KitsRoot10 registry value)'
    Write-Host "`n$script:failures problem(s); see docs\build-windows.md"
    exit 1
}
Pass "kit root $root"

$version = $env:Version_Number
if (-not $version) {
    $version = Get-ChildItem -LiteralPath (Join-Path $root 'Lib') -Directory -Filter '10.*' |
        Sort-Object Name -Descending | Select-Object -First 1 -ExpandProperty Name
    if (-not $version) { Fail "no Lib\10.* directory under $root"; exit 1 }
    Note "Version_Number is not set; the build uses the highest Lib directory, $version"
}
if ($version -like '10.0.26100*') { Pass "SDK/WDK version $version" }
else { Note "SDK/WDK version $version; CI and the docs use 10.0.26100.0 (set Version_Number)" }

$required = @(
    "Include\$version\km\crt", "Include\$version\km", "Include\$version\shared",
    "Include\$version\km\ufx\1.1", 'Include\wdf\kmdf\1.33',
    "Lib\$version\km\x64", 'Lib\wdf\kmdf\x64\1.33',
    "Include\$version\km\vmbuskernelmodeclientlibapi.h"
)
foreach ($rel in $required) {
    $path = Join-Path $root $rel
    if (Test-Path -LiteralPath $path) { Pass $rel } else { Fail "$rel is missing ($path)" }
}
$lib = Join-Path $root "Lib\$version\km\x64\vmbkmcl.lib"
if (Test-Path -LiteralPath $lib) {
    Pass "Lib\$version\km\x64\vmbkmcl.lib"
} else {
    $found = Get-ChildItem -LiteralPath (Join-Path $root 'Lib') -Recurse -Filter 'vmbkmcl.lib' -ErrorAction SilentlyContinue |
        Select-Object -First 3 -ExpandProperty FullName
    # Only `--features linked-kmcl` links it; the default build queries the interface table.
    if ($found) { Note "vmbkmcl.lib is not in Lib\$version\km\x64 but in: $($found -join '; ') (needed only for --features linked-kmcl; kmcl-sys/build.rs looks only in the wdk-build library paths)" }
    else { Note "vmbkmcl.lib not found under $root\Lib (needed only for --features linked-kmcl)" }
}

$binRoot = if ($env:WDKBinRoot) { $env:WDKBinRoot } else { Join-Path $root "bin\$version" }
$toolRoot = if ($env:WDKToolRoot) { $env:WDKToolRoot } else { Join-Path $root "tools\$version" }
$toolDirs = @((Join-Path $binRoot 'x64'), (Join-Path $binRoot 'x86'), (Join-Path $toolRoot 'x64'))
if ($env:WindowsSdkBinPath) { $toolDirs += Join-Path (Join-Path $env:WindowsSdkBinPath $version) 'x64' }
foreach ($tool in 'stampinf.exe', 'infverif.exe', 'inf2cat.exe', 'signtool.exe', 'makecert.exe', 'certmgr.exe') {
    $hit = $toolDirs | Where-Object { Test-Path -LiteralPath (Join-Path $_ $tool) } | Select-Object -First 1
    if ($hit) { Pass "$tool in $hit" } else { Fail "$tool not found in $($toolDirs -join '; ')" }
}

Write-Host 'MSVC'
$vswhere = Join-Path ${env:ProgramFiles(x86)} 'Microsoft Visual Studio\Installer\vswhere.exe'
if (Test-Path -LiteralPath $vswhere) {
    $vs = & $vswhere -latest -products * -requires Microsoft.VisualStudio.Component.VC.Tools.x86.x64 -property installationPath
    if ($vs) { Pass "MSVC x64 tools in $vs" } else { Fail 'no Visual Studio with the C++ x64 tools (Desktop development with C++)' }
} elseif ($env:VCToolsInstallDir) {
    Pass "MSVC from the environment ($env:VCToolsInstallDir, e.g. an eWDK prompt)"
} else {
    Note 'vswhere.exe not found and VCToolsInstallDir not set: cannot tell whether the MSVC linker is installed'
}

Write-Host 'LLVM'
$clang = Get-ToolVersion 'clang' @('--version')
if ($clang -match 'clang version (\d+\.\d+\.\d+)') {
    if ($Matches[1] -eq '17.0.6') { Pass "clang $($Matches[1])" }
    else { Note "clang $($Matches[1]) on PATH; CI and the docs use 17.0.6" }
} else {
    Fail 'clang not on PATH (LLVM 17.0.6: winget install -i LLVM.LLVM --version 17.0.6 --force)'
}
if ($env:LIBCLANG_PATH) {
    if (Test-Path -LiteralPath (Join-Path $env:LIBCLANG_PATH 'libclang.dll')) { Pass "LIBCLANG_PATH $env:LIBCLANG_PATH" }
    else { Fail "LIBCLANG_PATH=$env:LIBCLANG_PATH has no libclang.dll" }
}

Write-Host 'Rust'
$rustc = Get-ToolVersion 'rustc' @('--version')
if ($rustc -match 'rustc (\d+)\.(\d+)\.') {
    if ([int]$Matches[1] -gt 1 -or [int]$Matches[2] -ge 91) { Pass $rustc } else { Fail "$rustc; 1.91 or later is needed" }
} else { Fail 'rustc not found' }
if (Get-ToolVersion 'cargo' @('clippy', '--version')) { Pass 'clippy' } else { Note 'clippy not installed (rustup component add clippy)' }
$make = Get-ToolVersion 'cargo' @('make', '--version')
if ($make -match '(\d+)\.(\d+)\.(\d+)') {
    $v = [version]"$($Matches[1]).$($Matches[2]).$($Matches[3])"
    if ($v -ge [version]'0.37.16') { Pass "cargo-make $v" } else { Fail "cargo-make $v; 0.37.16 or later is needed (min_version of rust-driver-makefile.toml)" }
} else { Note 'cargo-make not installed (needed for `cargo make`)' }
$wdk = Get-ToolVersion 'cargo' @('wdk', '--version')
if ($wdk -match '(\d+\.\d+\.\d+)') {
    if ($Matches[1] -like '0.2.*') { Pass "cargo-wdk $($Matches[1])" } else { Note "cargo-wdk $($Matches[1]); the docs and scripts target 0.2" }
} else { Note 'cargo-wdk not installed (optional)' }

Write-Host 'Environment'
$admin = ([Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()).IsInRole(
    [Security.Principal.WindowsBuiltInRole]::Administrator)
$devMode = $false
try {
    $devMode = (Get-ItemPropertyValue 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\AppModelUnlock' -Name AllowDevelopmentWithoutDevLicense) -eq 1
} catch { }
if ($admin) { Pass 'elevated prompt (cargo make can create its symlink)' }
elseif ($devMode) { Pass 'Developer Mode (cargo make can create its symlink)' }
else { Note 'neither elevated nor Developer Mode: `cargo make` fails with os error 1314 (windows-drivers-rs #258); cargo-wdk is fine' }

foreach ($name in 'CARGO_TARGET_DIR', 'CARGO_BUILD_TARGET_DIR', 'CARGO_BUILD_BUILD_DIR') {
    $value = [Environment]::GetEnvironmentVariable($name)
    if ($value) { Fail "${name}=${value}: the WDK build scripts need the target directory inside the repository" }
}
foreach ($name in 'RUSTFLAGS', 'CARGO_ENCODED_RUSTFLAGS') {
    $value = [Environment]::GetEnvironmentVariable($name)
    if ($value -and $value -notmatch 'crt-static') { Fail "$name is set without +crt-static: it replaces .cargo/config.toml and the driver build fails (StaticCrtNotEnabled)" }
    elseif ($value) { Note "$name is set: fine for cargo build/clippy/test, but unset it for cargo make" }
}

Write-Host ''
if ($script:failures -gt 0) {
    Write-Host "$script:failures problem(s); see docs\build-windows.md" -ForegroundColor Red
    exit 1
}
Write-Host 'ready to build (docs\build-windows.md)'
