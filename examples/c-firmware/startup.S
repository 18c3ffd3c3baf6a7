/* Cortex-M4F start-up for QEMU's mps2-an386, and ARM semihosting (console and exit status).
 * Written in assembly so that the FPU is switched on before any compiled code runs: a C
 * reset handler's prologue may already save FP registers (a NOCP UsageFault). */
    .syntax unified
    .cpu cortex-m4
    .fpu fpv4-sp-d16
    .thumb

    .section .vectors, "a"
    .align 2
    .globl vector_table
vector_table:
    .word _estack               /* initial stack pointer */
    .word reset_handler
    .rept 14                    /* NMI, HardFault, MemManage, BusFault, UsageFault, ..., SysTick */
    .word fault_handler
    .endr

    .text
    .thumb_func
    .globl reset_handler
reset_handler:
    ldr r0, =0xE000ED88         /* CPACR: full access to CP10 and CP11 (the FPU) */
    ldr r1, [r0]
    orr r1, r1, #(0xF << 20)
    str r1, [r0]
    dsb
    isb
    ldr r0, =_sdata             /* copy .data from its load address in flash */
    ldr r1, =_edata
    ldr r2, =_sidata
1:  cmp r0, r1
    bhs 2f
    ldr r3, [r2], #4
    str r3, [r0], #4
    b 1b
2:  ldr r0, =_sbss              /* zero .bss */
    ldr r1, =_ebss
    movs r3, #0
3:  cmp r0, r1
    bhs 4f
    str r3, [r0], #4
    b 3b
4:  bl main
    bl semihost_exit            /* main's return value is the exit status */
5:  b 5b

/* int semihost_call(int operation, const void *argument) */
    .thumb_func
    .globl semihost_call
semihost_call:
    bkpt 0xAB
    bx lr

/* Any fault or unexpected interrupt: say so and exit with status 3, never hang CI. */
    .thumb_func
fault_handler:
    movs r0, #0x04              /* SYS_WRITE0 */
    ldr r1, =fault_message
    bkpt 0xAB
    movs r0, #0x20              /* SYS_EXIT_EXTENDED */
    ldr r1, =fault_exit
    bkpt 0xAB
6:  b 6b

    .section .rodata
    .align 2
fault_exit:
    .word 0x20026               /* ADP_Stopped_ApplicationExit */
    .word 3
fault_message:
    .asciz "firmware: fault exception\n"
