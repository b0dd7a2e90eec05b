<#
.SYNOPSIS
    Runs vmbmsg.sys under Driver Verifier in a Hyper-V guest and collects the verdict.

.DESCRIPTION
    Steps (each can be run alone with -Step; the default 'All' runs them in order):

      Enable   verifier /standard /driver vmbmsg.sys (special pool, force IRQL checking, pool
               tracking, I/O verification, deadlock detection, DMA checking, security checks,
               miscellaneous checks, DDI compliance checking and, since Windows 10 1803, WDF
               verification), or with -LowResources the same rule classes plus randomized low
               resources simulation (/ruleclasses ... 3). verifier.exe exits 2 when a reboot is
               needed: the script then reboots (unless -NoReboot) and registers a one-shot
               scheduled task that runs '-Step Run' then '-Step Verdict' at the next start.
      Run      checks that Verifier is active for the driver (verifier /query lists it), runs
               'vmbctl smoke', disables and re-enables the device (the driver unloads under
               pool tracking, so a leaked allocation bugchecks 0xC4 here), runs 'vmbctl smoke'
               again, and saves 'verifier /query' before and after.
      Verdict  PASS only if both smoke runs exited 0, vmbmsg.sys was verified (loads >= 1), no
               bugcheck was logged in the System event log since Enable, no new crash dump
               (%SystemRoot%\MEMORY.DMP, %SystemRoot%\Minidump\*.dmp) appeared since Enable,
               and the driver holds no pool allocation after the unload. Writes verdict.json.
      Reset    verifier /reset (takes effect after a reboot; -NoReboot to reboot yourself).

    Everything is written to -OutDir (default %ProgramData%\vmbmsg-verifier): state.json (the
    start time), query-*.txt, querysettings.txt, smoke-*.txt, events.txt, verdict.json.
    Exit code: 0 PASS (or step done), 1 FAIL, 2 usage or environment error, 3 reboot pending.

    See docs/verifier.md for what to look for in a crash dump.

.EXAMPLE
    # In an elevated PowerShell, in a test-signed guest with vmbmsg installed:
    .\scripts\windows\verifier.ps1 -Vmbctl C:\tools\vmbctl.exe

.EXAMPLE
    .\scripts\windows\verifier.ps1 -Step Enable -NoReboot   # then reboot when convenient
    .\scripts\windows\verifier.ps1 -Step Run
    .\scripts\windows\verifier.ps1 -Step Verdict
#>
[CmdletBinding()]
param(
    # 'Resume' is what the scheduled task runs after the reboot: Run, Verdict, remove the task.
    [ValidateSet('All', 'Enable', 'Run', 'Verdict', 'Reset', 'Resume')]
    [string]$Step = 'All',
    # Do not reboot; print what to do instead.
    [switch]$NoReboot,
    # Add randomized low resources simulation (rule class 3): pool allocations fail at random
    # after a delay (verifier /faults defaults), exercising every fallible allocation path.
    [switch]$LowResources,
    [string]$Vmbctl = 'vmbctl.exe',
    [string]$Driver = 'vmbmsg.sys',
    # The device's hardware id (inf/vmbmsg.inx).
    [string]$HardwareId = 'VMBUS\{336D9FDF-77D3-4EA8-8086-7B3C7BEECE54}',
    [string]$OutDir = (Join-Path $env:ProgramData 'vmbmsg-verifier'),
    [int]$SmokeTimeoutMs = 5000
)

Set-StrictMode -Version 3
$ErrorActionPreference = 'Stop'
$TaskName = 'vmbmsg-verifier-resume'

function Fail([string]$Message, [int]$Code = 2) {
    Write-Error $Message -ErrorAction Continue
    exit $Code
}

function Assert-Admin {
    $id = [Security.Principal.WindowsIdentity]::GetCurrent()
    $admin = (New-Object Security.Principal.WindowsPrincipal $id).IsInRole(
        [Security.Principal.WindowsBuiltInRole]::Administrator)
    if (-not $admin) { Fail 'run this script elevated (Administrator)' }
}

function Invoke-Verifier([string[]]$Arguments, [string]$SaveAs) {
    $out = & "$env:SystemRoot\System32\verifier.exe" @Arguments 2>&1 | Out-String
    $code = $LASTEXITCODE
    if ($SaveAs) { Set-Content -Path (Join-Path $OutDir $SaveAs) -Value $out -Encoding UTF8 }
    Write-Verbose "verifier $($Arguments -join ' ') -> $code"
    [pscustomobject]@{ Output = $out; Code = $code }
}

function Get-State {
    $path = Join-Path $OutDir 'state.json'
    if (Test-Path $path) { return Get-Content $path -Raw | ConvertFrom-Json }
    $null
}

function Save-State($State) {
    $State | ConvertTo-Json | Set-Content -Path (Join-Path $OutDir 'state.json') -Encoding UTF8
}

function Get-Device {
    $dev = Get-PnpDevice -PresentOnly -ErrorAction SilentlyContinue |
        Where-Object { $_.HardwareID -contains $HardwareId } | Select-Object -First 1
    if (-not $dev) { Fail "no present device with hardware id $HardwareId (is vmbmsg installed and the host offering the channel?)" }
    $dev
}

# The driver's section of 'verifier /query': "Name: vmbmsg.sys, loads: N, unloads: M" and the
# pool-tracking counters after it, as a hashtable (absent: $null).
function Get-DriverCounters([string]$QueryOutput) {
    $lines = $QueryOutput -split "`r?`n"
    $start = -1
    for ($i = 0; $i -lt $lines.Count; $i++) {
        if ($lines[$i] -match "^\s*Name:\s*$([regex]::Escape($Driver))\s*,") { $start = $i; break }
    }
    if ($start -lt 0) { return $null }
    $c = @{}
    if ($lines[$start] -match 'loads:\s*(\d+)') { $c['Loads'] = [int64]$Matches[1] }
    if ($lines[$start] -match 'unloads:\s*(\d+)') { $c['Unloads'] = [int64]$Matches[1] }
    for ($i = $start + 1; $i -lt $lines.Count; $i++) {
        if ($lines[$i] -match '^\s*Name:') { break }
        if ($lines[$i] -match '^\s*(\w+):\s*(\d+)\s*$') { $c[$Matches[1]] = [int64]$Matches[2] }
    }
    $c
}

# Global counters of 'verifier /query' ("AllocationsFailedDeliberately: 0", ...).
function Get-GlobalCounters([string]$QueryOutput) {
    $c = @{}
    foreach ($line in ($QueryOutput -split "`r?`n")) {
        if ($line -match '^\s*Name:') { break }
        if ($line -match '^\s*(\w+):\s*([0-9A-Fa-fx]+)\s*$') { $c[$Matches[1]] = $Matches[2] }
    }
    $c
}

function Step-Enable {
    $before = Invoke-Verifier @('/querysettings') 'querysettings-before.txt'
    $classes = @('1', '2', '4', '5', '6', '8', '9', '12', '18', '34')
    if ($LowResources) {
        # Standard rule classes (verifier-command-line, "Standard Rule Classes") + 3.
        $vargs = @('/ruleclasses') + $classes + @('3', '/driver', $Driver)
    } else {
        $vargs = @('/standard', '/driver', $Driver)
    }
    $r = Invoke-Verifier $vargs 'enable.txt'
    if ($r.Code -eq 1) { Fail "verifier $($vargs -join ' ') failed:`n$($r.Output)" }
    Invoke-Verifier @('/querysettings') 'querysettings.txt' | Out-Null
    Save-State ([pscustomobject]@{
        Started      = (Get-Date).ToString('o')
        LowResources = [bool]$LowResources
        Driver       = $Driver
    })
    # 2 = EXIT_CODE_REBOOT_NEEDED. Settings for /standard and /ruleclasses take effect at boot.
    if ($r.Code -eq 2 -or -not (Test-DriverVerified)) {
        if ($NoReboot) {
            Write-Host "Driver Verifier is set for $Driver; reboot, then run: $PSCommandPath -Step Run; then -Step Verdict"
            exit 3
        }
        Register-Resume
        Write-Host 'Rebooting to activate Driver Verifier; the run resumes at the next start.'
        Restart-Computer -Force
        exit 3
    }
}

function Test-DriverVerified {
    $q = (Invoke-Verifier @('/query') $null).Output
    $null -ne (Get-DriverCounters $q)
}

function Register-Resume {
    $ps = "$env:SystemRoot\System32\WindowsPowerShell\v1.0\powershell.exe"
    $argv = "-NoProfile -ExecutionPolicy Bypass -File `"$PSCommandPath`" -Step Resume " +
        "-Vmbctl `"$Vmbctl`" -Driver $Driver -HardwareId `"$HardwareId`" -OutDir `"$OutDir`" " +
        "-SmokeTimeoutMs $SmokeTimeoutMs"
    $action = New-ScheduledTaskAction -Execute $ps -Argument $argv
    $trigger = New-ScheduledTaskTrigger -AtStartup
    $trigger.Delay = 'PT1M' # let the VMBus devices start
    Register-ScheduledTask -TaskName $TaskName -Action $action -Trigger $trigger -User 'SYSTEM' -RunLevel Highest -Force | Out-Null
}

function Invoke-Smoke([string]$Name) {
    $log = Join-Path $OutDir "smoke-$Name.txt"
    & $Vmbctl smoke --timeout $SmokeTimeoutMs *>&1 | Out-File -FilePath $log -Encoding UTF8
    $code = $LASTEXITCODE
    Write-Host "vmbctl smoke ($Name): exit $code (log: $log)"
    $code
}

function Step-Run {
    if (-not (Get-State)) { Fail 'no state.json: run -Step Enable first' }
    if (-not (Test-DriverVerified)) {
        Fail "Driver Verifier is not active for $Driver (verifier /query does not list it): reboot after -Step Enable, and check that the driver is loaded"
    }
    Invoke-Verifier @('/query') 'query-before.txt' | Out-Null
    $dev = Get-Device
    $first = Invoke-Smoke 'first'
    # Unload and reload under Verifier: pool tracking bugchecks (0xC4, 0x62) on an unload with
    # allocations outstanding; the KMCL channel goes through Disable/Cleanup.
    & pnputil /disable-device "$($dev.InstanceId)" | Out-File (Join-Path $OutDir 'pnputil-disable.txt') -Encoding UTF8
    Start-Sleep -Seconds 3
    Invoke-Verifier @('/query') 'query-unloaded.txt' | Out-Null
    & pnputil /enable-device "$($dev.InstanceId)" | Out-File (Join-Path $OutDir 'pnputil-enable.txt') -Encoding UTF8
    Start-Sleep -Seconds 5
    $second = Invoke-Smoke 'after-reload'
    Invoke-Verifier @('/query') 'query-after.txt' | Out-Null
    $state = Get-State
    $state | Add-Member -NotePropertyName SmokeFirst -NotePropertyValue $first -Force
    $state | Add-Member -NotePropertyName SmokeAfterReload -NotePropertyValue $second -Force
    $state | Add-Member -NotePropertyName RunAt -NotePropertyValue (Get-Date).ToString('o') -Force
    Save-State $state
}

function Step-Verdict {
    $state = Get-State
    if (-not $state) { Fail 'no state.json: run -Step Enable and -Step Run first' }
    $since = [datetime]::Parse($state.Started)
    $reasons = New-Object System.Collections.Generic.List[string]

    foreach ($name in 'SmokeFirst', 'SmokeAfterReload') {
        if (-not ($state.PSObject.Properties.Name -contains $name)) { $reasons.Add("$name did not run"); continue }
        if ($state.$name -ne 0) { $reasons.Add("$name exited $($state.$name)") }
    }

    $after = Join-Path $OutDir 'query-after.txt'
    $counters = $null; $globals = @{}
    if (Test-Path $after) {
        $text = Get-Content $after -Raw
        $counters = Get-DriverCounters $text
        $globals = Get-GlobalCounters $text
    }
    if (-not $counters) { $reasons.Add("$Driver not listed by verifier /query: it was not verified") }
    elseif (-not $counters.ContainsKey('Loads') -or $counters['Loads'] -lt 1) { $reasons.Add("$Driver never loaded under Verifier") }
    $unloaded = Join-Path $OutDir 'query-unloaded.txt'
    if (Test-Path $unloaded) {
        $u = Get-DriverCounters (Get-Content $unloaded -Raw)
        if ($u) {
            foreach ($k in 'CurrentPagedPoolAllocations', 'CurrentNonPagedPoolAllocations') {
                if ($u.ContainsKey($k) -and $u[$k] -ne 0) { $reasons.Add("$k = $($u[$k]) with the device disabled (driver unloaded): leak") }
            }
        }
    }

    # Bugchecks: WER's "The computer has rebooted from a bugcheck" (System log, event 1001) and
    # unexpected reboots (Kernel-Power 41) since Enable.
    $events = @(Get-WinEvent -FilterHashtable @{ LogName = 'System'; StartTime = $since } -ErrorAction SilentlyContinue |
        Where-Object {
            ($_.Id -eq 1001 -and ($_.ProviderName -match 'WER-SystemErrorReporting|BugCheck')) -or
            ($_.Id -eq 41 -and $_.ProviderName -eq 'Microsoft-Windows-Kernel-Power')
        })
    $events | Format-List TimeCreated, ProviderName, Id, Message | Out-File (Join-Path $OutDir 'events.txt') -Encoding UTF8
    foreach ($e in $events) { $reasons.Add("System log $($e.ProviderName) $($e.Id) at $($e.TimeCreated): $(($e.Message -split "`n")[0])") }

    $dumps = @()
    $full = Join-Path $env:SystemRoot 'MEMORY.DMP'
    if ((Test-Path $full) -and (Get-Item $full).LastWriteTime -gt $since) { $dumps += $full }
    $mini = Join-Path $env:SystemRoot 'Minidump'
    if (Test-Path $mini) {
        $dumps += @(Get-ChildItem $mini -Filter *.dmp | Where-Object { $_.LastWriteTime -gt $since } | ForEach-Object FullName)
    }
    foreach ($d in $dumps) { $reasons.Add("crash dump $d (open it in WinDbg: docs/verifier.md)") }

    $verdict = if ($reasons.Count -eq 0) { 'PASS' } else { 'FAIL' }
    $result = [pscustomobject]@{
        Verdict        = $verdict
        Driver         = $Driver
        Since          = $state.Started
        LowResources   = $state.LowResources
        DriverCounters = $counters
        FaultsInjected = $globals['AllocationsFailedDeliberately']
        Dumps          = $dumps
        Reasons        = $reasons
    }
    $result | ConvertTo-Json -Depth 4 | Set-Content (Join-Path $OutDir 'verdict.json') -Encoding UTF8
    Write-Host "Driver Verifier verdict for ${Driver}: $verdict"
    foreach ($r in $reasons) { Write-Host "  - $r" }
    if ($verdict -eq 'PASS') { exit 0 } else { exit 1 }
}

function Step-Reset {
    $r = Invoke-Verifier @('/reset') 'reset.txt'
    if ($r.Code -eq 1) { Fail "verifier /reset failed:`n$($r.Output)" }
    if ($NoReboot) { Write-Host 'Verifier settings cleared; they go away at the next reboot.'; exit 3 }
    Restart-Computer -Force
}

Assert-Admin
New-Item -ItemType Directory -Force -Path $OutDir | Out-Null
switch ($Step) {
    'Enable' { Step-Enable }
    'Run' { Step-Run }
    'Verdict' { Step-Verdict }
    'Reset' { Step-Reset }
    'Resume' {
        Unregister-ScheduledTask -TaskName $TaskName -Confirm:$false -ErrorAction SilentlyContinue
        Step-Run
        Step-Verdict
    }
    'All' {
        if ((Get-State) -and (Test-DriverVerified)) {
            Write-Host "Driver Verifier already active for $Driver; running."
        } else {
            Step-Enable
        }
        Step-Run
        Step-Verdict
    }
}
